"""Hardware files (TOML) -> Hardware records.

Schema (a user can write their own):
    name      = "NVIDIA RTX A6000"
    bandwidth = 768e9 or "768 GB/s"        # off-chip memory bandwidth, bytes/s
    memory    = 51539607552 or "48 GiB"    # off-chip memory capacity, bytes
    sram      = "10.5 MiB"                 # optional: on-chip memory of the whole chip
    sram_per_block = "99 KiB"              # optional: on-chip memory one thread block can use
                                           # (FlashAttention's tile budget M)
    l2        = "40 MiB"                   # optional: the chip's last-level cache: a working set
                                           # that fits is re-read from it, not from memory
    sms       = 108                        # optional: streaming multiprocessors (compute units):
                                           # kernels run one thread block per SM at a time
    [peak]                                 # dense operations/s by compute type
    fp32 = "38.7 TFLOPS"                   # fp32 is the non-tensor (vector) rate: elementwise
    fp16 = "154.8 TFLOPS"                  # ops such as norms and softmax run at it
Compute types: fp64 fp32 tf32 fp16 bf16 fp8 int8 fp4 int4. Plain numbers are base units.
"""
from __future__ import annotations

import os
import re
import tomllib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Mapping

from ..errors import HardwareError, register_source
from .efficiency import Efficiency, Framework, parse_efficiency
from .collectives import AllReduce, parse_all_reduce
from .stacks import offered, parse_stacks, pick, stack_name
from .system import SYSTEM_KEYS, Host, Link, parse_count, parse_host, parse_link
from ..files import note_absent, read_user_text
from ..names import did_you_mean
from ..resources import shipped_dir

COMPUTE_TYPES = ("fp64", "fp32", "tf32", "fp16", "bf16", "fp8", "int8", "fp4", "int4")
SPARSE_SUFFIX = "_sparse"

_PREFIX = {"": 1, "K": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "P": 1e15,
           "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40}
_UNITS = {  # unit family -> regex of the unit after the prefix
    "bytes": r"B",
    "bytes/s": r"B/s|Bps",
    "ops/s": r"FLOPS|FLOP/s|OPS|OP/s",
}
_QUANTITY = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?)\s*(Ki|Mi|Gi|Ti|K|M|G|T|P)?(\S*)\s*$")


@dataclass(frozen=True)
class Hardware:
    key: str                    # file stem, e.g. "nvidia-a6000"
    name: str
    bandwidth_Bps: float
    memory_bytes: float
    peak: Mapping[str, float]   # ops/s by compute type
    sram_bytes: float | None = None
    source: str = ""
    sram_per_block: float | None = None
    efficiency: Efficiency | None = None  # None: the ideal roofline (datasheet figures)
    sparse_peak: Mapping[str, float] = field(default_factory=dict)
    """ops/s of N:M (2:4) structured-sparse matrix work by compute type: the datasheets' "with
    sparsity" figures ([peak] keys `fp16_sparse`, ...), counted in the dense operations the
    sparse kernel stands for. Absent: sparse work runs at the dense rate."""
    count: int = 1                  # devices (a system file: several)
    nodes: int = 1                  # nodes they are spread over
    link: Link | None = None        # scale-up interconnect, per device
    host: Host | None = None        # host memory over the host link
    network: Link | None = None     # scale-out, per device (between nodes)
    device_key: str = ""            # the device a system file names ("" for a device file)
    ideal_links: bool = False       # ideal(): links at their datasheet bandwidth too
    sms: int | None = None          # streaming multiprocessors: blocks that run at once
    l2_bytes: float | None = None   # last-level cache (L2): re-reads that fit are served on chip
    stacks: Mapping[str, Efficiency] = field(default_factory=dict)  # [stack.NAME] figures
    all_reduces: Mapping[str, AllReduce] = field(default_factory=dict)  # [all_reduce.NAME]
    price_per_hour: float | None = None   # $ per device-hour (`search --objective cost`)

    @property
    def is_system(self) -> bool:
        return bool(self.device_key)

    @property
    def per_node(self) -> int:
        return self.count // self.nodes

    def channel(self, name: str) -> Link:
        """The link, network or host channel a transfer uses, as a Link."""
        if name == "host":
            return Link(self.host.bandwidth_Bps)
        return self.link if name == "link" else self.network

    def channel_bandwidth(self, name: str) -> float:
        return self.channel(name).achieved(self.ideal_links)

    @property
    def stack(self) -> str | None:
        """The serving stack (and version) whose kernels price the times; None when ideal or
        when the file's figures do not say (a calibration written without --stack)."""
        return (self.efficiency.stack or None) if self.efficiency is not None else None

    @property
    def stack_names(self) -> list[str]:
        """The stacks `with_stack` can pick: the default's name first."""
        return offered(self.efficiency, self.stacks)

    @property
    def all_reduce(self) -> AllReduce | None:
        """The all-reduce algorithms of the stack that prices the times (None: NCCL's ring over
        the link for every message, as in the ideal roofline or a stack the file has no
        [all_reduce.NAME] for)."""
        if self.efficiency is None or self.ideal_links:
            return None
        return self.all_reduces.get(stack_name(self.efficiency))

    def with_stack(self, name: str) -> "Hardware":
        """The same hardware priced by stack `name`'s figures ([stack.NAME] or the default)."""
        return replace(self, efficiency=pick(self.efficiency, self.stacks, name, self.key))

    @property
    def framework(self) -> Framework | None:
        """The serving engine's figures around the kernels (None: the kernels alone)."""
        return self.efficiency.framework if self.efficiency is not None else None

    @property
    def request_s(self) -> float:
        """The serving engine's seconds per request before its first token (0 without)."""
        return self.framework.request_s if self.framework is not None else 0.0

    def with_framework(self, framework: Framework | None) -> "Hardware":
        """The same kernels inside another serving engine (None: the kernels alone, as they
        were measured: what calibrate and validate compare)."""
        if self.efficiency is None:
            return self
        return replace(self, efficiency=replace(self.efficiency, framework=framework))

    def ideal(self) -> "Hardware":
        """The same hardware with its [efficiency] ignored: the survey's ideal roofline."""
        return replace(self, efficiency=None, ideal_links=True)

    @property
    def time_model(self) -> str:
        """Which model a time comes from: "ideal" or "efficiency"."""
        return "ideal" if self.efficiency is None else "efficiency"

    def kernel_type(self, ctype: str | None, kind: str) -> str | None:
        """The compute type an op of `kind` whose operands make `ctype` runs in: the one its
        family's figures declare (efficiency COMPUTE_TYPE_NOTE), else `ctype` (no arithmetic:
        None; the ideal roofline: the operands')."""
        e = self.efficiency
        return e.kernel_type(ctype, kind) if e is not None and ctype else ctype

    def peak_for(self, ctype: str, kind: str = "linear") -> float:
        """Operations/s an op of `kind` (see efficiency.efficiency_kind) achieves in `ctype`:
        the datasheet peak times its efficiency (1 for the ideal roofline)."""
        e = self.efficiency
        return self.peak[ctype] * (e.compute_for(ctype, kind) if e else 1.0)

    def sparse_peak_for(self, ctype: str, kind: str = "linear") -> float:
        """The N:M-sparse rate of `ctype` (the dense rate where the file gives none), with the
        type's efficiency."""
        e = self.efficiency
        rate = self.sparse_peak.get(ctype, self.peak[ctype])
        return rate * (e.compute_for(ctype, kind) if e else 1.0)

    def bandwidth_for(self, kind: str = "linear") -> float:
        e = self.efficiency
        return self.bandwidth_Bps * (e.bandwidth_for(kind) if e else 1.0)

    def rows_for(self, kind: str) -> float:
        """Token rows a kernel of `kind` needs to fill the chip (0: occupancy not modelled)."""
        return self.efficiency.rows_for(kind) if self.efficiency else 0.0

    def overlaps(self, kind: str = "linear") -> bool:
        """Whether a kernel of `kind` hides its memory time behind its compute (the max; the
        ideal roofline always does)."""
        return self.efficiency.overlaps(kind) if self.efficiency else True

    def input_bytes_for(self, kind: str = "linear") -> float:
        """Bytes a kernel of `kind` moves per input element before it runs (0 ideal)."""
        return self.efficiency.input_bytes_for(kind) if self.efficiency else 0.0

    def tiles_for(self, kind: str = "linear") -> float:
        """GEMM output tiles a kernel of `kind` needs to fill the chip (0: not modelled)."""
        return self.efficiency.tiles_for(kind) if self.efficiency else 0.0

    def output_bytes_for(self, kind: str = "linear") -> float:
        """Bytes a kernel of `kind` moves per output element after its main loop (0 ideal)."""
        return self.efficiency.output_bytes_for(kind) if self.efficiency else 0.0

    def split_for(self, kind: str) -> tuple[float, float] | None:
        """(bytes/s, seconds) of a decode attention kernel's split regime; None without one."""
        split = self.efficiency.split_for(kind) if self.efficiency else None
        return None if split is None else (self.bandwidth_Bps * split[0], split[1])

    def floor_for(self, kind: str = "linear") -> float:
        """Seconds a call of `kind` takes at least: its host time outside a CUDA graph
        (efficiency floor; 0 for the ideal roofline)."""
        return self.efficiency.floor_for(kind) if self.efficiency else 0.0

    def one_row_for(self, kind: str = "linear") -> float:
        """Seconds a call of `kind` with one output row adds (efficiency one_row; 0 ideal)."""
        return self.efficiency.one_row_for(kind) if self.efficiency else 0.0

    def k_latency_for(self, kind: str = "linear") -> float:
        """Seconds per element of k a GEMM of `kind` adds (efficiency k_latency; 0 ideal)."""
        return self.efficiency.k_latency_for(kind) if self.efficiency else 0.0

    def split_k_for(self, kind: str = "linear") -> tuple[float, float] | None:
        """(k per output tile above which a GEMM of `kind` splits its k, seconds it adds)
        (efficiency split_depth, split_k); None: no split (and ideal)."""
        return self.efficiency.split_k_for(kind) if self.efficiency else None

    def launch_for(self, kind: str = "linear") -> float:
        """Seconds of fixed cost per kernel of `kind` (0 for the ideal roofline)."""
        return self.efficiency.launch_for(kind) if self.efficiency else 0.0

    @property
    def vector_type(self) -> str:
        """The type elementwise work runs at: fp32, else (a TPU) the fastest listed."""
        return "fp32" if "fp32" in self.peak else max(self.peak, key=self.peak.get)

    def headline_type(self) -> str:
        """The compute type to quote in one line: fp16, else bf16, else the fastest listed."""
        for ctype in ("fp16", "bf16"):
            if ctype in self.peak:
                return ctype
        return max(self.peak, key=self.peak.get)

    def ridge(self, compute_type: str) -> float:
        """Intensity (ops/byte) above which an op of this type is compute-bound."""
        return self.peak[compute_type] / self.bandwidth_Bps


_SECONDS = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?)\s*(ns|us|µs|ms|s)\s*$")
_SECOND_PREFIX = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0}
MAX_LAUNCH_S = 1.0  # a kernel launch costs microseconds; a second is a typo


def _seconds(value, where: str) -> float:
    """A duration: a number of seconds or "4 us", "0.5 ms"; zero is allowed."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        number = float(value)
    else:
        m = _SECONDS.match(value) if isinstance(value, str) else None
        if not m:
            raise ValueError(f"{where} = {value!r}: expected a duration such as \"4 us\"")
        number = float(m.group(1)) * _SECOND_PREFIX[m.group(2)]
    if not 0 <= number <= MAX_LAUNCH_S:
        raise ValueError(f"{where} must be between 0 and {MAX_LAUNCH_S:g} s")
    return number


def parse_quantity(value, family: str, where: str) -> float:
    """A number in base units, or a string such as "768 GB/s", "48 GiB", "154.8 TFLOPS"
    (family "seconds": "4 us")."""
    if family == "seconds":
        return _seconds(value, where)
    if isinstance(value, bool):
        raise ValueError(f"{where} must be a number or a quantity string, not a boolean")
    if isinstance(value, (int, float)):
        number = float(value)
    elif isinstance(value, str):
        m = _QUANTITY.match(value)
        if not m or not re.fullmatch(_UNITS[family], m.group(3)):
            raise ValueError(f"{where} = {value!r}: expected a number with a unit in {family} "
                             f"(e.g. {_EXAMPLE[family]})")
        number = float(m.group(1)) * _PREFIX[m.group(2) or ""]
    else:
        raise ValueError(f"{where} must be a number or a quantity string")
    if not (MIN_FIGURE <= number <= MAX_FIGURE):
        raise ValueError(f"{where} must be a positive finite figure from {MIN_FIGURE:g} to "
                         f"{MAX_FIGURE:g} {family}")
    return number


MIN_FIGURE = 1.0
"""Every figure here (bytes, bytes/s, ops/s) is at least one base unit: 1e-310 B/s is a typo,
and would overflow every time computed from it."""
MAX_FIGURE = 1e20
"""No memory, bandwidth or rate of real hardware comes near 1e20 base units (a B200's fp4 peak
is 9e15 ops/s); a larger figure, or inf, is a typo that would print as 0 s or NaN."""

OP_KINDS = frozenset({
    "embedding", "position_embedding", "linear", "router", "expert_linear", "expert_act",
    "mla_absorb", "mla_cache", "mla_v_up", "ssm_conv", "ssm_scan", "rmsnorm", "layernorm",
    "rope", "sigmoid", "silu", "gelu", "relu", "swiglu", "geglu", "add", "mul", "fused",
    "qk_matmul", "softmax", "sv_matmul", "delta_rule", "gated_rmsnorm", "ssd_scan",
    "relu2", "indexer", "block_index", "concat", "kv_compress", "sparse_attention",
    "hc_expand", "hc_pre", "hc_post", "attn_res", "patch_embed"})
"""Op kinds an [efficiency] sub-table may name (the language's ops as the graph holds them;
the hardware stage does not import the language, so the list is kept here and a test checks it
against the op vocabulary)."""

ROW_KINDS = frozenset({
    "position_embedding", "expert_act", "mla_cache", "ssm_conv", "ssm_scan", "rmsnorm",
    "layernorm", "rope", "sigmoid", "silu", "gelu", "relu", "swiglu", "geglu", "add", "mul",
    "fused", "softmax", "gated_rmsnorm", "relu2", "kv_compress", "hc_pre", "hc_post",
    "attn_res"})
"""The elementwise kinds (the vector engine; a fused op where its members are): those whose
[efficiency] table may give `rows`, the occupancy of one thread block per token row."""

_EXAMPLE = {"bytes": '"48 GiB"', "bytes/s": '"768 GB/s"', "ops/s": '"154.8 TFLOPS"'}


_HEADER = re.compile(r"^\s*\[\s*([A-Za-z0-9_.\- ]+?)\s*\]\s*(#.*)?$")


def _line_of(text: str, key: str) -> int | None:
    """The line of `key`, a dotted path (`efficiency.compute.fp16`): a table header naming it
    (`[efficiency.tile]`), or the key in the table that holds it, written plainly
    (`fp16 = ` under `[efficiency.compute]`) or dotted (`compute.fp16 = ` under
    `[efficiency]`); a key inside an inline table, the line of the key holding the table
    (`one_shot = { ... }`). None where the file does not show it (never another table's line)."""
    parts = key.split(".")
    if len(parts) == 1:
        return _line_of_key(text, parts)
    return next((found for end in range(len(parts), 1, -1)
                 if (found := _line_of_key(text, parts[:end])) is not None), None)


def _line_of_key(text: str, parts: list[str]) -> int | None:
    key = ".".join(parts)
    lines = text.splitlines()
    headers = {}
    for i, line in enumerate(lines):
        m = _HEADER.match(line)
        if m:
            headers[i] = [p.strip() for p in m.group(1).split(".")]
    for i, names in headers.items():
        if names == parts:
            return i + 1
    bounds = sorted(headers) + [len(lines)]
    for k in range(len(parts) - 1, -1, -1):
        section, rest = parts[:k], parts[k:]
        starts = [i + 1 for i, names in headers.items() if names == section] if section else [0]
        pattern = re.compile(r"^\s*" + r"\s*\.\s*".join(map(re.escape, rest)) + r"\s*=")
        for first in starts:
            last = next(b for b in bounds if b >= first)
            for i in range(first, last):
                if pattern.match(lines[i]):
                    return i + 1
    if len(parts) == 1:  # a bare key: wherever it is first written
        pattern = re.compile(rf"^\s*{re.escape(key)}\s*=")
        return next((i + 1 for i, line in enumerate(lines) if pattern.match(line)), None)
    return None


def resolve_path(spec: str) -> Path:
    """`spec` is a shipped name (nvidia-a6000) or a path to a TOML file."""
    path = Path(spec)
    if path.suffix == ".toml" or path.exists():
        return path
    note_absent(path)   # a file of this name made here later would be read instead
    shipped = shipped_dir("hardware") / f"{spec}.toml"
    if shipped.exists():
        return shipped
    guess = did_you_mean(spec, shipped_names())
    raise HardwareError(f"unknown hardware {spec!r}",
                        hint=(guess + " " if guess else "") + "shipped: " +
                        ", ".join(shipped_names()) + "; or give a .toml path")


def shipped_names() -> list[str]:
    return sorted(p.stem for p in shipped_dir("hardware").glob("*.toml"))


_LOADED: dict[tuple[str, str], Hardware] = {}
"""Device files already parsed, keyed by their path and full text: a file read again with the
same text gives the same record without parsing it again (analyze in a loop passes names)."""


_BY_SPEC: dict[str, tuple[str, tuple, bool, Hardware]] = {}
"""Device files by the name they were asked for, with the file's stat signature when read: a
name asked for again, its file unchanged, is answered without reading it (a loop of
`analyze(..., "nvidia-a100-80gb")` would otherwise read and compare the file on every call)."""


def _signature(path: str | Path) -> tuple | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_mtime_ns, st.st_ctime_ns, st.st_size, st.st_ino


def load_hardware(spec: str, _within: tuple[str, ...] = ()) -> Hardware:
    hit = _BY_SPEC.get(spec)
    if hit is not None:
        path, signature, bare, hw = hit
        # a bare name stays the shipped file unless a file of that name has appeared since
        if _signature(path) == signature and not (bare and os.path.exists(spec)):
            return hw
    path = resolve_path(spec)
    signature = _signature(path)   # taken before reading: a file changed meanwhile is re-read
    hw = _load_hardware(path, _within)
    if not hw.is_system:   # a system's record also depends on its device's file
        if len(_BY_SPEC) > 64:
            _BY_SPEC.clear()
        _BY_SPEC[spec] = (str(path), signature, path != Path(spec), hw)
    return hw


def _load_hardware(path: Path, _within: tuple[str, ...]) -> Hardware:
    text = read_user_text(path, "hardware file", HardwareError)
    register_source(str(path), text)
    known = _LOADED.get((str(path), text))
    if known is not None:
        return known
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        m = re.search(r"\(at line (\d+), column (\d+)\)", str(err))
        line, col = (int(m.group(1)), int(m.group(2))) if m else (None, None)
        raise HardwareError(f"not valid TOML: {str(err).split(' (at')[0]}", file=str(path),
                            line=line, column=col) from None
    fail = _failing(path, text)
    if "device" in data:
        return _system(data, path, fail, _within + (str(path.resolve()),))
    hw = _with_channels(_from_table(data, path, fail), data, fail)
    if len(_LOADED) > 64:
        _LOADED.clear()
    _LOADED[(str(path), text)] = hw
    return hw


def _failing(path: Path, text: str):
    def fail(message, key=None, hint=None):
        line = _line_of(text, key) if key else None
        return HardwareError(message, file=str(path), line=line, column=1 if line else None,
                             hint=hint)
    return fail


CHANNEL_SECTIONS = ("link", "host", "network")


def _with_channels(hw: Hardware, data: dict, fail) -> Hardware:
    """The [link], [host] and [network] sections of a device or system file, over `hw`'s."""
    found = {}
    for section in ("link", "network"):
        if section in data:
            found[section] = parse_link(data[section], fail, parse_quantity, section)
    if "host" in data:
        found["host"] = parse_host(data["host"], fail, parse_quantity)
    if "all_reduce" in data:   # a system's own measurements replace its device's, per stack
        found["all_reduces"] = {**hw.all_reduces,
                                **parse_all_reduce(data, fail, parse_quantity)}
    return replace(hw, **found)


def _system(data: dict, path: Path, fail, within: tuple[str, ...]) -> Hardware:
    """A system file: the named device, `count` of them over `nodes` nodes, with the file's
    links and host memory (or the device's)."""
    unknown = sorted(set(data) - {"name", "notes", "efficiency", "stack", "all_reduce",
                                  "price_per_hour", *SYSTEM_KEYS, *CHANNEL_SECTIONS})
    if unknown:
        raise fail(f"unknown key {unknown[0]!r} in a system file", unknown[0],
                   hint="a system file has name, device, count, nodes, [link], [host], "
                        "[network], [all_reduce], [efficiency] and [stack]; the device's own "
                        "figures belong in its device file")
    if not isinstance(data.get("name"), str):
        raise fail("a system file needs a name string", "name" if "name" in data else None)
    if not isinstance(data["device"], str) or not data["device"]:
        raise fail("device must name a device file (a shipped name or a path)", "device")
    beside = path.parent / data["device"]
    spec = str(beside) if beside.suffix == ".toml" and beside.is_file() else data["device"]
    try:
        target = str(resolve_path(spec).resolve())
    except HardwareError as err:
        raise fail(err.message, "device", err.hint) from None
    if target in within:
        raise fail(f"device {data['device']!r} names a system that contains this one", "device")
    device = load_hardware(spec, within)
    if device.is_system:
        raise fail(f"device {data['device']!r} is itself a system ({device.count} devices)",
                   "device", hint="name the single device: a system of systems is given by "
                                  "count and nodes")
    count = parse_count(data, "count", fail)
    nodes = parse_count(data, "nodes", fail, default=1)
    if count % nodes:
        raise fail(f"count = {count} devices do not split evenly over nodes = {nodes}", "nodes")
    system = replace(device, key=path.stem, name=data["name"], source=str(path), count=count,
                     nodes=nodes, device_key=device.key,
                     price_per_hour=_price(data, fail, device.price_per_hour))
    system = _with_channels(system, data, fail)
    if "efficiency" in data:   # its devices' kernels as calibrated on this system
        system = replace(system, efficiency=_efficiency_of(data, device.peak, fail),
                         stacks=_stacks_of(data, device.peak, fail))
    elif "stack" in data:
        system = replace(system, stacks={**device.stacks,
                                         **_stacks_of(data, device.peak, fail)})
    if count > 1 and system.link is None:
        raise fail(f"a system of {count} devices needs a [link] (here or in the device file)",
                   hint="add [link] with the interconnect's bandwidth per device")
    if nodes > 1 and system.network is None:
        raise fail(f"a system over {nodes} nodes needs a [network] section",
                   hint="add [network] with the scale-out bandwidth per device")
    return system


def _stacks_of(data: dict, peak: Mapping[str, float], fail) -> dict[str, Efficiency]:
    """The file's [stack.NAME] sections, each read and checked as [efficiency] is."""
    return parse_stacks(data, lambda table, located: _efficiency_table(table, peak, located),
                        fail)


def _efficiency_of(data: dict, peak: Mapping[str, float], fail) -> Efficiency | None:
    """The file's [efficiency] section (None without one), its compute types checked against
    the chip's [peak]."""
    if "efficiency" not in data:
        return None
    if not isinstance(data["efficiency"], dict):
        raise fail("[efficiency] must be a table", "efficiency")
    return _efficiency_table(data["efficiency"], peak, fail)


def _efficiency_table(table: dict, peak: Mapping[str, float], fail) -> Efficiency:
    efficiency = parse_efficiency(table, fail, parse_quantity, OP_KINDS, ROW_KINDS)
    unknown_types = set(efficiency.compute) - set(peak)
    if unknown_types:
        raise fail(f"[efficiency.compute] names {sorted(unknown_types)[0]!r}, which [peak] "
                   "does not list", "efficiency.compute." + sorted(unknown_types)[0])
    for family, own in sorted(efficiency.kinds.items()):
        if own.compute_type is not None and own.compute_type not in peak:
            raise fail(f"efficiency {family}.compute_type = {own.compute_type!r}, which [peak] "
                       "does not list: the chip has no rate for it",
                       f"efficiency.{family}.compute_type", "[peak] lists " + ", ".join(peak))
    return efficiency


def _from_table(data: dict, path: Path, fail) -> Hardware:
    for key in ("name", "bandwidth", "memory", "peak"):
        if key not in data:
            raise fail(f"missing required key {key!r}",
                       hint="a device file needs name, bandwidth, memory and a [peak] table; a "
                            "system file names a device and a count")
    unknown = set(data) - {"name", "bandwidth", "memory", "sram", "sram_per_block", "sms",
                           "l2", "peak", "notes", "efficiency", "stack", "all_reduce",
                           "price_per_hour",
                           *CHANNEL_SECTIONS}
    if unknown:
        key = sorted(unknown)[0]
        raise fail(f"unknown key {key!r}", key,
                   hint="keys: name, bandwidth, memory, sram, sram_per_block, sms, l2, [peak], "
                        "notes, "
                        "[efficiency], [stack], [link], [host], [network], [all_reduce]; a "
                        "system file has device and count")
    if not isinstance(data["name"], str):
        raise fail("name must be a string", "name")
    if not isinstance(data["peak"], dict) or not data["peak"]:
        raise fail("[peak] must be a table of compute type = operations/s", "peak")
    try:
        bandwidth = parse_quantity(data["bandwidth"], "bytes/s", "bandwidth")
    except ValueError as err:
        raise fail(str(err), "bandwidth") from None
    try:
        memory = parse_quantity(data["memory"], "bytes", "memory")
    except ValueError as err:
        raise fail(str(err), "memory") from None
    sram = {}
    for key in ("sram", "sram_per_block", "l2"):
        if key in data:
            try:
                sram[key] = parse_quantity(data[key], "bytes", key)
            except ValueError as err:
                raise fail(str(err), key) from None
    sms = data.get("sms")
    if sms is not None and (isinstance(sms, bool) or not isinstance(sms, int) or
                            not 0 < sms <= 100_000):
        raise fail(f"sms = {sms!r}: expected a positive whole number of multiprocessors", "sms")
    peak, sparse = {}, {}
    for key, value in data["peak"].items():
        ctype = key.removesuffix(SPARSE_SUFFIX)
        if ctype not in COMPUTE_TYPES:
            raise fail(f"unknown compute type {key!r} in [peak]", key,
                       hint="compute types: " + ", ".join(COMPUTE_TYPES) + " (and TYPE"
                            f"{SPARSE_SUFFIX} for the 2:4-sparse rate)")
        try:
            (sparse if key != ctype else peak)[ctype] = parse_quantity(value, "ops/s",
                                                                       f"peak.{key}")
        except ValueError as err:
            raise fail(str(err), key) from None
    for ctype, rate in sparse.items():
        if ctype not in peak:
            raise fail(f"[peak] gives {ctype}{SPARSE_SUFFIX} but no dense {ctype} rate",
                       ctype + SPARSE_SUFFIX)
        if rate < peak[ctype]:
            raise fail(f"{ctype}{SPARSE_SUFFIX} = {rate:.4g} is below the dense {ctype} rate "
                       f"{peak[ctype]:.4g}", ctype + SPARSE_SUFFIX,
                       hint="datasheets quote the sparse rate in dense-equivalent operations: "
                            "twice the dense rate on NVIDIA's tensor cores")
    efficiency = _efficiency_of(data, peak, fail)
    return Hardware(path.stem, data["name"], bandwidth, memory, peak, sram.get("sram"), str(path),
                    sram.get("sram_per_block"), efficiency, sparse, sms=sms,
                    l2_bytes=sram.get("l2"), stacks=_stacks_of(data, peak, fail),
                    price_per_hour=_price(data, fail))


def _price(data: dict, fail, default: float | None = None) -> float | None:
    """`price_per_hour`: dollars per device-hour, a positive number (its source in a comment
    beside it, as every figure's)."""
    if "price_per_hour" not in data:
        return default
    value = data["price_per_hour"]
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise fail(f"price_per_hour must be a positive number of dollars per device-hour, got "
                   f"{value!r}", "price_per_hour")
    return float(value)


_HARDWARE_KEYS: dict[int, tuple[Hardware, tuple]] = {}


def figures_key(hw: Hardware) -> tuple:
    """Every figure of a hardware record that enters a roofline, as a hashable key (kept per
    record: building it formats the efficiency tables, too slow to repeat per call)."""
    known = _HARDWARE_KEYS.get(id(hw))
    if known is not None and known[0] is hw:
        return known[1]
    key = (hw.key, hw.bandwidth_Bps, hw.sram_per_block, hw.l2_bytes, tuple(sorted(hw.peak.items())),
           tuple(sorted(hw.sparse_peak.items())), repr(hw.efficiency),
           repr((hw.count, hw.nodes, hw.link, hw.network, hw.host, hw.ideal_links)),
           repr(hw.all_reduce))
    if len(_HARDWARE_KEYS) > 256:
        _HARDWARE_KEYS.clear()
    _HARDWARE_KEYS[id(hw)] = (hw, key)
    return key
