"""Links between devices, the host memory behind a device, and systems of several devices.

A device file may carry `[link]` (its scale-up interconnect, per device, one direction), `[host]`
(host memory reached over the device's host link) and `[network]` (scale-out, per device). A
system file names a device and how many of it:

    name = "NVIDIA DGX H100"
    device = "nvidia-h100-sxm"     # a shipped name or a path
    count = 8                      # devices in the whole system
    nodes = 1                      # optional: nodes the devices are spread over (count / nodes each)
    [link]                         # overrides the device's [link]
    bandwidth = "450 GB/s"
    latency = "3 us"               # per message step (the alpha of the alpha-beta model)
    efficiency = 0.9               # optional: achieved fraction of bandwidth (fitted); the ideal
                                   # roofline ignores it, as it ignores [efficiency]
    [host]
    memory = "2 TiB"               # optional: without it host capacity is not checked
    bandwidth = "64 GB/s"

Every figure of a system is per device: analysis results of a system are those of one device,
with communication priced on `link` inside a node and on `network` across nodes.
"""
from __future__ import annotations

from dataclasses import dataclass

LINK_KEYS = ("bandwidth", "latency", "efficiency")
HOST_KEYS = ("bandwidth", "memory")
SYSTEM_KEYS = ("device", "count", "nodes")
MAX_DEVICES = 1_000_000


@dataclass(frozen=True)
class Link:
    """A channel between devices: bandwidth per device, one direction, and the fixed time of
    one message step (alpha)."""
    bandwidth_Bps: float
    latency_s: float = 0.0
    efficiency: float | None = None   # achieved fraction of bandwidth (fitted); None: 1

    def achieved(self, ideal: bool) -> float:
        """Bytes/s the roofline prices a transfer at."""
        return self.bandwidth_Bps * (1.0 if ideal or self.efficiency is None else self.efficiency)


@dataclass(frozen=True)
class Host:
    """Host memory behind a device: the host link's bandwidth (one direction) and, where the
    file states it, the host's capacity."""
    bandwidth_Bps: float
    memory_bytes: float | None = None


def parse_link(table, fail, parse_quantity, section: str) -> Link:
    if not isinstance(table, dict):
        raise fail(f"[{section}] must be a table", section)
    _only(table, LINK_KEYS, section, fail)
    if "bandwidth" not in table:
        raise fail(f"[{section}] needs bandwidth (per device, one direction)", section)
    bandwidth = figure(table, "bandwidth", "bytes/s", section, fail, parse_quantity)
    latency = (figure(table, "latency", "seconds", section, fail, parse_quantity)
               if "latency" in table else 0.0)
    efficiency = fraction(table, "efficiency", section, fail) if "efficiency" in table else None
    return Link(bandwidth, latency, efficiency)


def parse_host(table, fail, parse_quantity) -> Host:
    if not isinstance(table, dict):
        raise fail("[host] must be a table", "host")
    _only(table, HOST_KEYS, "host", fail)
    if "bandwidth" not in table:
        raise fail("[host] needs bandwidth (the host link, one direction)", "host")
    memory = (figure(table, "memory", "bytes", "host", fail, parse_quantity)
              if "memory" in table else None)
    return Host(figure(table, "bandwidth", "bytes/s", "host", fail, parse_quantity), memory)


def parse_count(data, key: str, fail, default: int | None = None) -> int:
    value = data.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_DEVICES:
        raise fail(f"{key} must be a whole number of devices from 1 to {MAX_DEVICES:,}, got "
                   f"{value!r}", key)
    return value


def figure(table, key, family, section, fail, parse_quantity) -> float:
    """table[key], a quantity of `family`, in base units; a located error otherwise."""
    try:
        return parse_quantity(table[key], family, f"{section}.{key}")
    except ValueError as err:
        raise fail(str(err), f"{section}.{key}") from None


def fraction(table, key, section, fail) -> float:
    """table[key], an achieved fraction of a link's bandwidth in (0, 4] (above 1: the switch
    reduces in the network, NVLink SHARP)."""
    value = table[key]
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= 4:
        raise fail(f"{section}.{key} must be a fraction in (0, 4], got {value!r}",
                   f"{section}.{key}")
    return float(value)


def _only(table, keys, section, fail) -> None:
    unknown = sorted(set(table) - set(keys))
    if unknown:
        raise fail(f"unknown key {unknown[0]!r} in [{section}]", f"{section}.{unknown[0]}",
                   hint=f"[{section}] keys: " + ", ".join(keys))
