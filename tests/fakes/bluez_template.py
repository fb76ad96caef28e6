"""A python-dbusmock template that plays BlueZ 5 for bleak 3.1 and Threshold's advertiser.

It runs inside `/usr/bin/python3 -m dbusmock --system -t <this file>` (Debian's python3-dbusmock 0.28,
dbus-python), never inside the test process. tests/fakes/bluez.py drives it over D-Bus.

Differences from dbusmock's stock `bluez5` template, each one a trap for bleak (shared/RECIPES.md):
- Device1 `ManufacturerData` is `a{qv}` and `ServiceData` is `a{sv}` (the stock template gives arrays, so
  bleak raises inside its signal handler and the detection callback never fires);
- adapters have `Roles` (bleak's default-adapter lookup indexes it), `AdvertisementMonitorManager1`
  (passive scanning), `LEAdvertisingManager1` (the gateway's iBeacon and check-in advertisement) and
  `GattManager1` (the check-in GATT service: `RegisterApplication` reads the application's objects
  with GetManagedObjects before it replies and refuses one without a valid service, as bluetoothd
  does; the test then plays bluetoothd, calling the application's ReadValue and WriteValue);
- discovery sessions and monitors are kept per D-Bus client, as bluetoothd does: `StartDiscovery` on a
  powered-off adapter fails with `org.bluez.Error.NotReady`, powering off ends every discovery session,
  and `Advertise` reaches the bus only while someone scans. So adverts flowing again after a fault
  prove the client really restarted its scan.
"""

import dbus
import dbus.service
from dbusmock import OBJECT_MANAGER_IFACE, mockobject

BUS_NAME = "org.bluez"
MAIN_OBJ = "/"
SYSTEM_BUS = True
IS_OBJECT_MANAGER = True

MOCK_IFACE = "org.bluez.Mock"
ADAPTER_IFACE = "org.bluez.Adapter1"
DEVICE_IFACE = "org.bluez.Device1"
MONITOR_MANAGER_IFACE = "org.bluez.AdvertisementMonitorManager1"
ADVERTISING_MANAGER_IFACE = "org.bluez.LEAdvertisingManager1"
ADVERTISEMENT_IFACE = "org.bluez.LEAdvertisement1"
GATT_MANAGER_IFACE = "org.bluez.GattManager1"
GATT_SERVICE_IFACE = "org.bluez.GattService1"
GATT_CHARACTERISTIC_IFACE = "org.bluez.GattCharacteristic1"
PROPERTIES_IFACE = dbus.PROPERTIES_IFACE
DISCOVERY_FILTERS = [
    "UUIDs",
    "RSSI",
    "Pathloss",
    "Transport",
    "DuplicateData",
    "Discoverable",
    "Pattern",
]
CALLBACK_TIMEOUT_S = 5.0


def load(mock, _parameters):
    mock.AddObject(
        "/org/bluez",
        "org.bluez.AgentManager1",
        {},
        [
            ("RegisterAgent", "os", "", ""),
            ("RequestDefaultAgent", "o", "", ""),
            ("UnregisterAgent", "o", "", ""),
        ],
    )


def _error(name, text):
    return dbus.exceptions.DBusException(text, name=name)


def _adapter(name):
    path = "/org/bluez/" + name
    if path not in mockobject.objects:
        raise _error("org.bluez.Mock.NoSuchAdapter", f"adapter {name} does not exist")
    return mockobject.objects[path]


def _emit_changed(obj, interface, changed):
    obj.EmitSignal(
        PROPERTIES_IFACE,
        "PropertiesChanged",
        "sa{sv}as",
        [
            interface,
            dbus.Dictionary(changed, signature="sv"),
            dbus.Array([], signature="s"),
        ],
    )


def _client_method(obj, interface, name, in_sig, out_sig, fn):
    """Install `fn(obj, *args, sender)` as a logged D-Bus method that learns the caller's bus name.

    dbusmock's AddMethod cannot pass the sender, and bluetoothd keeps state per client.
    """

    def method(self, *args, sender=None):
        return fn(self, *args, sender)

    # What @dbus.service.method(..., sender_keyword="sender") would set: the decorator itself
    # rejects a function taking *args.
    method._dbus_is_method = True
    method._dbus_async_callbacks = None
    method._dbus_interface = interface
    method._dbus_in_signature = in_sig
    method._dbus_out_signature = out_sig
    method._dbus_sender_keyword = "sender"
    method._dbus_path_keyword = None
    method._dbus_rel_path_keyword = None
    method._dbus_destination_keyword = None
    method._dbus_message_keyword = None
    method._dbus_connection_keyword = None
    method._dbus_args = [f"arg{i}" for i in range(len(dbus.Signature(in_sig)))]
    method._dbus_get_args_options = {"byte_arrays": False}
    method.__name__ = name
    obj.methods.setdefault(interface, {})[name] = (
        in_sig,
        out_sig,
        "",
        mockobject.loggedmethod(obj, method),
    )


def _set_discovering(adapter, value):
    props = adapter.props[ADAPTER_IFACE]
    if bool(props["Discovering"]) != value:
        props["Discovering"] = dbus.Boolean(value, variant_level=1)
        _emit_changed(adapter, ADAPTER_IFACE, {"Discovering": dbus.Boolean(value, variant_level=1)})


def _powered(adapter):
    return bool(adapter.props[ADAPTER_IFACE]["Powered"])


def _start_discovery(adapter, sender):
    if not _powered(adapter):
        raise _error("org.bluez.Error.NotReady", "Resource Not Ready")
    adapter.discovery_clients.add(sender)
    _set_discovering(adapter, True)


def _stop_discovery(adapter, sender):
    if not _powered(adapter):
        raise _error("org.bluez.Error.NotReady", "Resource Not Ready")
    if sender not in adapter.discovery_clients:
        raise _error("org.bluez.Error.Failed", "No discovery started")
    adapter.discovery_clients.discard(sender)
    adapter.discovery_filters.pop(sender, None)
    _set_discovering(adapter, bool(adapter.discovery_clients))


def _set_discovery_filter(adapter, discovery_filter, sender):
    if not _powered(adapter):
        raise _error("org.bluez.Error.NotReady", "Resource Not Ready")
    adapter.discovery_filters[sender] = dict(discovery_filter)


def _register_monitor(adapter, path, sender):
    if (sender, str(path)) in adapter.monitors:
        raise _error("org.bluez.Error.AlreadyExists", "Already Exists")
    adapter.monitors.add((sender, str(path)))


def _unregister_monitor(adapter, path, sender):
    if (sender, str(path)) not in adapter.monitors:
        raise _error("org.bluez.Error.DoesNotExist", "Does Not Exist")
    adapter.monitors.discard((sender, str(path)))


def _register_advertisement(adapter, path, _options, sender):
    key = (str(sender), str(path))
    if key in adapter.advertisements:
        raise _error("org.bluez.Error.AlreadyExists", "Already Exists")
    # bluetoothd reads the advertisement's properties from the client before it replies, so the
    # object has to be exported before RegisterAdvertisement is called.
    try:
        props = adapter.connection.call_blocking(
            sender,
            path,
            PROPERTIES_IFACE,
            "GetAll",
            "s",
            [ADVERTISEMENT_IFACE],
            timeout=CALLBACK_TIMEOUT_S,
        )
    except dbus.exceptions.DBusException as exc:
        raise _error("org.bluez.Error.Failed", f"Failed to parse advertisement: {exc}") from exc
    if str(props.get("Type", "")) not in ("broadcast", "peripheral"):
        raise _error("org.bluez.Error.InvalidArguments", "Invalid Type")
    adapter.advertisements[key] = props


def _unregister_advertisement(adapter, path, sender):
    if adapter.advertisements.pop((str(sender), str(path)), None) is None:
        raise _error("org.bluez.Error.DoesNotExist", "Does Not Exist")


def _register_application(adapter, path, _options, sender):
    key = (str(sender), str(path))
    if key in adapter.applications:
        raise _error("org.bluez.Error.AlreadyExists", "Already Exists")
    # bluetoothd reads the application (GetManagedObjects on its path) before it replies, so its
    # objects have to be exported before RegisterApplication is called.
    try:
        objects = adapter.connection.call_blocking(
            sender,
            path,
            OBJECT_MANAGER_IFACE,
            "GetManagedObjects",
            "",
            [],
            timeout=CALLBACK_TIMEOUT_S,
        )
    except dbus.exceptions.DBusException as exc:
        raise _error("org.bluez.Error.Failed", f"Failed to read the application: {exc}") from exc
    services = {
        str(p)
        for p, interfaces in objects.items()
        if "UUID" in interfaces.get(GATT_SERVICE_IFACE, {})
        and "Primary" in interfaces.get(GATT_SERVICE_IFACE, {})
    }
    if not services:
        raise _error("org.bluez.Error.Failed", "No valid service object found")
    for p, interfaces in objects.items():
        chrc = interfaces.get(GATT_CHARACTERISTIC_IFACE)
        if chrc is None:
            continue
        if str(chrc.get("Service", "")) not in services or "UUID" not in chrc:
            raise _error("org.bluez.Error.Failed", f"Failed to create characteristic {p}")
        if not chrc.get("Flags"):
            raise _error("org.bluez.Error.Failed", f"Failed to parse characteristic flags {p}")
    adapter.applications[key] = objects


def _unregister_application(adapter, path, sender):
    if adapter.applications.pop((str(sender), str(path)), None) is None:
        raise _error("org.bluez.Error.DoesNotExist", "Does Not Exist")


def _properties_set(adapter, interface, name, value, _sender):
    """Properties.Set on an adapter: powering off ends every discovery session, as in bluetoothd."""
    mockobject.DBusMockObject.Set(adapter, interface, name, value)
    if interface == ADAPTER_IFACE and name == "Powered" and not bool(value):
        adapter.discovery_clients.clear()
        adapter.discovery_filters.clear()
        _set_discovering(adapter, False)


def _install_start_discovery(adapter):
    _client_method(adapter, ADAPTER_IFACE, "StartDiscovery", "", "", _start_discovery)


@dbus.service.method(MOCK_IFACE, in_signature="ssbas", out_signature="s")
def AddAdapter(self, name, address, powered, monitor_types):
    """Add (or plug back) adapter `name`; no AdvertisementMonitorManager1 when monitor_types is empty."""
    path = "/org/bluez/" + name
    adapter_props = {
        "Address": dbus.String(address, variant_level=1),
        "AddressType": dbus.String("public", variant_level=1),
        "Name": dbus.String("threshold-test", variant_level=1),
        "Alias": dbus.String("threshold-test", variant_level=1),
        "Class": dbus.UInt32(0, variant_level=1),
        "Powered": dbus.Boolean(powered, variant_level=1),
        "PowerState": dbus.String("on" if powered else "off", variant_level=1),
        "Discoverable": dbus.Boolean(False, variant_level=1),
        "DiscoverableTimeout": dbus.UInt32(180, variant_level=1),
        "Pairable": dbus.Boolean(False, variant_level=1),
        "PairableTimeout": dbus.UInt32(0, variant_level=1),
        "Discovering": dbus.Boolean(False, variant_level=1),
        "UUIDs": dbus.Array([], signature="s", variant_level=1),
        "Modalias": dbus.String("usb:v1D6Bp0246d0548", variant_level=1),
        "Roles": dbus.Array(["central", "peripheral"], signature="s", variant_level=1),
        "ExperimentalFeatures": dbus.Array([], signature="s", variant_level=1),
    }
    self.AddObject(path, ADAPTER_IFACE, adapter_props, [])
    adapter = mockobject.objects[path]
    adapter.discovery_clients = set()
    adapter.discovery_filters = {}
    adapter.monitors = set()
    adapter.advertisements = {}
    adapter.applications = {}
    _install_start_discovery(adapter)
    _client_method(adapter, ADAPTER_IFACE, "StopDiscovery", "", "", _stop_discovery)
    _client_method(adapter, ADAPTER_IFACE, "SetDiscoveryFilter", "a{sv}", "", _set_discovery_filter)
    _client_method(adapter, PROPERTIES_IFACE, "Set", "ssv", "", _properties_set)
    adapter.AddMethods(
        ADAPTER_IFACE,
        [
            ("RemoveDevice", "o", "", "objects['/'].RemoveDeviceObject(args[0])"),
            ("GetDiscoveryFilters", "", "as", f"ret = {DISCOVERY_FILTERS!r}"),
        ],
    )
    if monitor_types:
        adapter.AddProperties(
            MONITOR_MANAGER_IFACE,
            {
                "SupportedMonitorTypes": dbus.Array(monitor_types, signature="s", variant_level=1),
                "SupportedFeatures": dbus.Array([], signature="s", variant_level=1),
            },
        )
        _client_method(
            adapter, MONITOR_MANAGER_IFACE, "RegisterMonitor", "o", "", _register_monitor
        )
        _client_method(
            adapter, MONITOR_MANAGER_IFACE, "UnregisterMonitor", "o", "", _unregister_monitor
        )
    adapter.AddProperties(
        ADVERTISING_MANAGER_IFACE,
        {
            "ActiveInstances": dbus.Byte(0, variant_level=1),
            "SupportedInstances": dbus.Byte(5, variant_level=1),
            "SupportedIncludes": dbus.Array(
                ["tx-power", "local-name"], signature="s", variant_level=1
            ),
            "SupportedSecondaryChannels": dbus.Array(
                ["1M", "2M", "Coded"], signature="s", variant_level=1
            ),
        },
    )
    _client_method(
        adapter,
        ADVERTISING_MANAGER_IFACE,
        "RegisterAdvertisement",
        "oa{sv}",
        "",
        _register_advertisement,
    )
    _client_method(
        adapter,
        ADVERTISING_MANAGER_IFACE,
        "UnregisterAdvertisement",
        "o",
        "",
        _unregister_advertisement,
    )
    # GattManager1 has no properties; an empty entry still lists the interface.
    adapter.props[GATT_MANAGER_IFACE] = dbus.Dictionary({}, signature="sv")
    _client_method(
        adapter,
        GATT_MANAGER_IFACE,
        "RegisterApplication",
        "oa{sv}",
        "",
        _register_application,
    )
    _client_method(
        adapter, GATT_MANAGER_IFACE, "UnregisterApplication", "o", "", _unregister_application
    )
    self.EmitSignal(
        OBJECT_MANAGER_IFACE,
        "InterfacesAdded",
        "oa{sa{sv}}",
        [
            dbus.ObjectPath(path),
            adapter.props,
        ],
    )
    return path


@dbus.service.method(MOCK_IFACE, in_signature="s", out_signature="")
def RemoveAdapter(self, name):
    """Unplug adapter `name`: its devices go, then the adapter; advertisements are released."""
    adapter = _adapter(name)
    prefix = adapter.path + "/"
    for path in [p for p in mockobject.objects if p.startswith(prefix)]:
        self.RemoveDeviceObject(path)
    for sender, path in list(adapter.advertisements):
        adapter.connection.call_async(
            sender,
            path,
            ADVERTISEMENT_IFACE,
            "Release",
            "",
            [],
            reply_handler=lambda *_: None,
            error_handler=lambda *_: None,
        )
    interfaces = [str(i) for i in adapter.props]
    self.RemoveObject(adapter.path)
    self.EmitSignal(
        OBJECT_MANAGER_IFACE,
        "InterfacesRemoved",
        "oas",
        [
            dbus.ObjectPath(adapter.path),
            dbus.Array(interfaces, signature="s"),
        ],
    )


@dbus.service.method(MOCK_IFACE, in_signature="o", out_signature="")
def RemoveDeviceObject(self, path):
    """Drop one Device1 object, announcing it as bluetoothd does."""
    self.RemoveObject(path)
    self.EmitSignal(
        OBJECT_MANAGER_IFACE,
        "InterfacesRemoved",
        "oas",
        [
            dbus.ObjectPath(path),
            dbus.Array([DEVICE_IFACE], signature="s"),
        ],
    )


@dbus.service.method(MOCK_IFACE, in_signature="s", out_signature="")
def RestoreStartDiscovery(self, name):
    """Undo an AddMethod replacement of the adapter's StartDiscovery (a fault injection)."""
    _install_start_discovery(_adapter(name))


@dbus.service.method(MOCK_IFACE, in_signature="ssa{sv}", out_signature="b")
def Advertise(self, name, address, props):
    """One advert from `address` reaches adapter `name`; `props` are Device1 properties, typed.

    Returns whether anyone heard it: the adapter is powered and a client scans (discovery or a monitor).
    A first advert adds the Device1 object (InterfacesAdded), later ones change it (PropertiesChanged).
    """
    adapter = _adapter(name)
    if not (_powered(adapter) and (adapter.discovery_clients or adapter.monitors)):
        return False
    _put_device(self, adapter, address, props)
    return True


@dbus.service.method(MOCK_IFACE, in_signature="ssa{sv}", out_signature="o")
def ConnectDevice(self, name, address, props):
    """A central (an iPhone) at `address` connects to adapter `name`: its Device1 object appears
    (or changes) with Connected = true and `props` (say, an RSSI), scanning or not. Returns its path,
    the `device` option bluetoothd passes to the application's ReadValue and WriteValue."""
    adapter = _adapter(name)
    connected = {"Connected": dbus.Boolean(True, variant_level=1)}
    connected.update(props)
    return dbus.ObjectPath(_put_device(self, adapter, address, connected))


def _put_device(manager, adapter, address, props):
    path = adapter.path + "/dev_" + address.upper().replace(":", "_")
    if path in mockobject.objects:
        device = mockobject.objects[path]
        device.props[DEVICE_IFACE].update(props)
        _emit_changed(device, DEVICE_IFACE, props)
        return path
    device_props = {
        "Address": dbus.String(address.upper(), variant_level=1),
        "AddressType": dbus.String("random", variant_level=1),
        "Alias": dbus.String(address.upper().replace(":", "-"), variant_level=1),
        "Adapter": dbus.ObjectPath(adapter.path, variant_level=1),
        "Paired": dbus.Boolean(False, variant_level=1),
        "Bonded": dbus.Boolean(False, variant_level=1),
        "Trusted": dbus.Boolean(False, variant_level=1),
        "Blocked": dbus.Boolean(False, variant_level=1),
        "LegacyPairing": dbus.Boolean(False, variant_level=1),
        "Connected": dbus.Boolean(False, variant_level=1),
        "ServicesResolved": dbus.Boolean(False, variant_level=1),
        "UUIDs": dbus.Array([], signature="s", variant_level=1),
    }
    device_props.update(props)
    manager.AddObject(path, DEVICE_IFACE, device_props, [])
    manager.EmitSignal(
        OBJECT_MANAGER_IFACE,
        "InterfacesAdded",
        "oa{sa{sv}}",
        [
            dbus.ObjectPath(path),
            {DEVICE_IFACE: device_props},
        ],
    )
    return path


@dbus.service.method(MOCK_IFACE, in_signature="s", out_signature="a(so)")
def GetAdvertisements(_self, name):
    """The (client bus name, object path) of every advertisement registered on adapter `name`."""
    return [(s, dbus.ObjectPath(p)) for s, p in sorted(_adapter(name).advertisements)]


@dbus.service.method(MOCK_IFACE, in_signature="s", out_signature="a(so)")
def GetApplications(_self, name):
    """The (client bus name, object path) of every GATT application registered on adapter `name`."""
    return [(s, dbus.ObjectPath(p)) for s, p in sorted(_adapter(name).applications)]


@dbus.service.method(MOCK_IFACE, in_signature="s", out_signature="a(so)")
def GetMonitors(_self, name):
    """The (client bus name, object path) of every advertisement monitor registered on `name`."""
    return [(s, dbus.ObjectPath(p)) for s, p in sorted(_adapter(name).monitors)]


@dbus.service.method(MOCK_IFACE, in_signature="s", out_signature="as")
def GetDiscoveryClients(_self, name):
    """The bus names of the clients that have a discovery session on adapter `name`."""
    return sorted(_adapter(name).discovery_clients)
