from cloud_bridge.cli import entry

entry()
