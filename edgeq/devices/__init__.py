"""Devices: where an artifact runs (transports: local, adb, ssh) and what a device is
(``edgeq.devices.profiles``: the DeviceProfile read from ``device_profiles/*.yaml``)."""
