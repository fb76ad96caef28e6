from cloud_bridge.cli import main

raise SystemExit(main())
