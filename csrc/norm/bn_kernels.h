// Batch-norm micro-kernels over one contiguous (n, c) plane of `n` elements,
// any n, one function per dtype and kernel family (f32_bn_avx512.cpp, ...).
//
// stats:      out[0] = sum(x - shift), out[1] = sum((x - shift)^2).
//             Shifting by one of the channel's own values keeps the one-pass
//             variance sum/n - mean^2 accurate for channels with a large mean
//             and a small spread (x - shift is exact within a factor 2 of
//             shift); sums in double, or for float32 SIMD in float over blocks
//             of at most 8 terms per lane and in double across blocks, keep it
//             accurate for long planes.
// affine:     y = act((x - shift) * scale + offset + r), r the residual
//             plane or nullptr (none), act relu when `relu` (NaN kept, as
//             torch.relu) or the identity: the whole fused BN + add + ReLU of a
//             ResNet block in one read of x (and r) and one write of y. The
//             subtraction comes first (not x * scale + const) so that a large
//             mean cancels exactly before the scaling instead of after it.
// bwd_reduce: out[0] = sum(g), out[1] = sum(g * (x - mean)), summed likewise.
// For float32, shift and mean are float32 values (an element, the saved mean).
// bwd_input:  gi = g * a + (x - mean) * b + c.
// *_stream variants write with non-temporal stores (for outputs larger than
// the caches: no read-for-ownership of the destination lines) and end with a
// store fence; the scalar family lists its plain kernels instead.
// Each kernel sums in a fixed order that depends only on n, so a plane gives
// the same bits whichever thread runs it.
#pragma once

#include <cstddef>

namespace nnkern::norm {

using F32BnStatsFn = void (*)(std::size_t n, const float* x, double shift, double* out);
using F32BnAffineFn = void (*)(std::size_t n, const float* x, const float* r, float* y, float shift, float scale,
                               float offset, bool relu);
using F32BnBwdReduceFn = void (*)(std::size_t n, const float* g, const float* x, double mean, double* out);
using F32BnBwdInputFn = void (*)(std::size_t n, const float* g, const float* x, float* gi, float mean, float a,
                                 float b, float c);

#define NNKERN_DECLARE_BN(isa)                                                                             \
  void f32_bn_stats_##isa(std::size_t n, const float* x, double shift, double* out);                     \
  void f32_bn_affine_##isa(std::size_t n, const float* x, const float* r, float* y, float shift, float scale, \
                           float offset, bool relu);                                                     \
  void f32_bn_bwd_reduce_##isa(std::size_t n, const float* g, const float* x, double mean, double* out);  \
  void f32_bn_bwd_input_##isa(std::size_t n, const float* g, const float* x, float* gi, float mean, float a, \
                              float b, float c);

#define NNKERN_DECLARE_BN_STREAM(isa)                                                                        \
  void f32_bn_affine_stream_##isa(std::size_t n, const float* x, const float* r, float* y, float shift,      \
                                  float scale, float offset, bool relu);                                     \
  void f32_bn_bwd_input_stream_##isa(std::size_t n, const float* g, const float* x, float* gi, float mean,   \
                                     float a, float b, float c);

NNKERN_DECLARE_BN_STREAM(avx2)
NNKERN_DECLARE_BN_STREAM(avx512)
#undef NNKERN_DECLARE_BN_STREAM

NNKERN_DECLARE_BN(scalar)
NNKERN_DECLARE_BN(avx2)
NNKERN_DECLARE_BN(avx512)
#undef NNKERN_DECLARE_BN

// float64: one portable family (the compiler vectorizes it for the baseline ISA).
void f64_bn_stats_scalar(std::size_t n, const double* x, double shift, double* out);
void f64_bn_affine_scalar(std::size_t n, const double* x, const double* r, double* y, double shift, double scale,
                          double offset, bool relu);
void f64_bn_bwd_reduce_scalar(std::size_t n, const double* g, const double* x, double mean, double* out);
void f64_bn_bwd_input_scalar(std::size_t n, const double* g, const double* x, double* gi, double mean, double a,
                             double b, double c);

}  // namespace nnkern::norm
