// Dropout keep-masks from the counter-based generator of
// python/nnkern/backends/numpy_ref/counter_rng.py: element i (C-order flat
// index) is kept when the top 24 bits of splitmix64(key + (i + 1) * phi) are
// >= threshold. Pure 64-bit integer math, so every family and thread count
// gives the NumPy mask bit for bit.
#pragma once

#include <cstddef>
#include <cstdint>

namespace nnkern::vmath {

// keep[j] = draw(first + j) >= threshold, for j in [0, n); keep holds 0 / 1 bytes (NumPy bool).
using DropoutMaskFn = void (*)(std::size_t n, std::uint64_t first, std::uint64_t key, std::uint32_t threshold,
                               bool* keep);

constexpr std::uint64_t kSplitmixPhi = 0x9E3779B97F4A7C15ull;
constexpr std::uint64_t kSplitmixM1 = 0xBF58476D1CE4E5B9ull;
constexpr std::uint64_t kSplitmixM2 = 0x94D049BB133111EBull;

void dropout_mask_scalar(std::size_t n, std::uint64_t first, std::uint64_t key, std::uint32_t threshold, bool* keep);
// AVX-512DQ has the 64-bit multiply (vpmullq) the mix needs; AVX2 would emulate
// it with three 32-bit multiplies, so the avx2 family uses the scalar kernel.
void dropout_mask_avx512(std::size_t n, std::uint64_t first, std::uint64_t key, std::uint32_t threshold, bool* keep);

}  // namespace nnkern::vmath
