#!/bin/sh
# Installs the Debian packages Threshold's demo and tests need, or prints the command to do so.
set -eu
missing=""
command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ] || missing="$missing mosquitto"
command -v mosquitto_passwd >/dev/null 2>&1 || [ -x /usr/bin/mosquitto_passwd ] || missing="$missing mosquitto"
python3 -c 'import ensurepip, venv' >/dev/null 2>&1 || missing="$missing python3-venv"
# The fake BlueZ of the bleak and advertiser tests: a private dbus-daemon, and python-dbusmock run by
# Debian's own python3 (tests/fakes/bluez.py).
command -v dbus-daemon >/dev/null 2>&1 || [ -x /usr/bin/dbus-daemon ] || missing="$missing dbus-daemon"
/usr/bin/python3 -c 'import dbus, dbusmock' >/dev/null 2>&1 || missing="$missing python3-dbusmock"
missing=$(printf '%s\n' $missing | sort -u | tr '\n' ' ' | sed 's/^ *//; s/ *$//')
[ -z "$missing" ] && exit 0
if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "Installing Debian packages:$missing"
    DEBIAN_FRONTEND=noninteractive apt-get update -q
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q $missing
else
    echo "Threshold needs these Debian packages:$missing" >&2
    echo "Install them with:  sudo apt-get install -y $missing" >&2
    exit 1
fi
