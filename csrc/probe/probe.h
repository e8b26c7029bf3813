// Machine ceilings, to put kernel timings in perspective.
#pragma once

#include <cstddef>
#include <cstdint>

namespace nnkern::probe {

// FP32 FMA throughput in GFLOP/s (an FMA counts 2) of `threads` threads
// running concurrently for `seconds`, with the active kernel family.
double peak_gflops(int threads, double seconds);

// Copy bandwidth in GB/s (bytes read + bytes written) of `threads` threads
// copying disjoint slices of an nbytes buffer; best of a few repetitions,
// pages faulted in beforehand.
double copy_bandwidth(int threads, std::size_t nbytes);

// Per-family FMA loops: run `iterations` rounds over independent accumulator
// chains, store a reduction of them to *sink (so nothing is optimized away)
// and return the floating-point operations done.
using FmaProbeFn = std::uint64_t (*)(std::uint64_t iterations, float* sink);
std::uint64_t fma_probe_scalar(std::uint64_t iterations, float* sink);
std::uint64_t fma_probe_avx2(std::uint64_t iterations, float* sink);
std::uint64_t fma_probe_avx512(std::uint64_t iterations, float* sink);

}  // namespace nnkern::probe
