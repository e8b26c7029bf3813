// The float32 exp of the vector families (f32_vactivation_*, f32_softmax_*):
// exp(a) = 2^n * exp(r), n = round(a / ln2), r = a - n ln2 in two steps
// (|r| <= ln2/2), exp(r) = 1 + r + r^2 * Q(r). Constants only: each ISA's
// header (exp_avx512.h, exp_avx2.h) spells the steps in its intrinsics.
#pragma once

namespace nnkern::vmath {

// Q: a degree-4 least-squares fit in relative error (0.12 ulp before rounding).
constexpr float kExpQ0 = 0.49999991059303284f, kExpQ1 = 0.16666541993618011f, kExpQ2 = 0.04166920855641365f,
                kExpQ3 = 0.008366144262254238f, kExpQ4 = 0.0013752946397289634f;
// ln2 split so that n * kLn2Hi is exact for |n| < 2^11 (kLn2Hi has 12 bits).
constexpr float kLn2Hi = 0.693145751953125f, kLn2Lo = 1.428606765330187e-06f;
constexpr float kLog2e = 1.4426950408889634f;

}  // namespace nnkern::vmath
