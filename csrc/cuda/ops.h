// The CUDA operators as plain C++ declarations (no CUDA headers): defined in
// ops_impl.h, which is compiled twice — by nvcc into nnkern._cuda (ops.cu) and by
// the host compiler into the emulator module nnkern._cuda_emu (ops_emu.cpp).
//
// Arguments are device addresses (integers from Python: CuPy's a.data.ptr, or a
// NumPy address for the emulator) of C-contiguous arrays that Python allocated
// and validated; `f64` picks double over float; `stream` is a cudaStream_t
// (CuPy's current stream; ignored by the emulator). Launches are asynchronous
// on the stream; nothing here allocates or synchronizes.
#pragma once

#include <cstdint>
#include <vector>

namespace nnkern::cuda_ops {

using Ptr = std::uintptr_t;

// Emulator/device self-test: see kernels/selftest.cuh (out: 3n ints, counter: 1 int).
void selftest(Ptr out, Ptr counter, std::int64_t n, unsigned threads, Ptr stream);

// activation: "relu", "sigmoid" or "tanh" -> 0, 1, 2
void activation(int which, bool f64, Ptr x, Ptr y, std::int64_t n, Ptr stream);
void activation_backward(int which, bool f64, Ptr g, Ptr y, Ptr gx, std::int64_t n, Ptr stream);
void dropout(bool f64, Ptr x, Ptr y, Ptr mask, std::int64_t n, std::uint64_t key, std::uint32_t threshold,
             double scale, Ptr stream);
void dropout_backward(bool f64, Ptr g, Ptr mask, Ptr gx, std::int64_t n, double scale, Ptr stream);
// rows = outer * inner rows of d elements (the softmax axis), spaced inner apart
void softmax(bool f64, bool log, Ptr x, Ptr y, std::int64_t rows, std::int64_t d, std::int64_t inner, Ptr stream);
void softmax_backward(bool f64, bool log, Ptr g, Ptr y, Ptr gx, std::int64_t rows, std::int64_t d,
                      std::int64_t inner, Ptr stream);
// nll: n doubles of scratch
void cross_entropy(bool f64, Ptr logits, Ptr target, Ptr nll, Ptr out, std::int64_t n, std::int64_t c, Ptr stream);
void cross_entropy_backward(bool f64, Ptr grad_loss, Ptr logits, Ptr target, Ptr gx, std::int64_t n, std::int64_t c,
                            Ptr stream);


// Pooling over `planes` NCHW planes; pool = {h, w, oh, ow, kh, kw, sh, sw, ph, pw, dh, dw}.
using Geom = std::vector<std::int64_t>;
void max_pool(bool f64, Ptr x, Ptr y, Ptr indices, std::int64_t planes, const Geom& pool, Ptr stream);
void max_pool_backward(bool f64, Ptr g, Ptr indices, Ptr gx, std::int64_t planes, const Geom& pool, Ptr stream);
void avg_pool(bool f64, Ptr x, Ptr y, std::int64_t planes, const Geom& pool, bool include_pad, Ptr stream);
void avg_pool_backward(bool f64, Ptr g, Ptr gx, std::int64_t planes, const Geom& pool, bool include_pad, Ptr stream);
// sizes = {h, w, oh, ow}
void adaptive_avg_pool(bool f64, Ptr x, Ptr y, std::int64_t planes, const Geom& sizes, Ptr stream);
void adaptive_avg_pool_backward(bool f64, Ptr g, Ptr gx, std::int64_t planes, const Geom& sizes, Ptr stream);

// Batch norm over (n, channels, s); shift_mean: 2 * channels doubles of scratch; running stats may be 0.
void bn_stats(bool f64, Ptr x, Ptr shift_mean, Ptr mean, Ptr invstd, Ptr running_mean, Ptr running_var,
              std::int64_t n, std::int64_t channels, std::int64_t s, double momentum, double eps, Ptr stream);
void bn_eval_stats(bool f64, Ptr running_mean, Ptr running_var, Ptr shift_mean, Ptr mean, Ptr invstd,
                   std::int64_t channels, double eps, Ptr stream);
void bn_output(bool f64, Ptr x, Ptr shift_mean, Ptr invstd, Ptr weight, Ptr bias, Ptr y, std::int64_t n,
               std::int64_t channels, std::int64_t s, Ptr stream);
void bn_grad_sums(bool f64, Ptr g, Ptr x, Ptr mean, Ptr invstd, Ptr grad_weight, Ptr grad_bias, std::int64_t n,
                  std::int64_t channels, std::int64_t s, Ptr stream);
void bn_grad_input(bool f64, Ptr g, Ptr x, Ptr mean, Ptr invstd, Ptr weight, Ptr grad_weight, Ptr grad_bias, Ptr gx,
                   std::int64_t n, std::int64_t channels, std::int64_t s, bool training, Ptr stream);

// C = A B (+ C) + biases + addend, relu'd; dims = {m, n, k, a_m, a_k, a_batch, b_k, b_n, b_batch, ldc, c_batch,
// batch, k_inner, a_ko, b_ko} (see kernels/gemm.cuh; k_inner >= 1); bias and addend pointers may be 0.
void gemm(bool f64, Ptr a, Ptr b, Ptr c, Ptr row_bias, Ptr col_bias, Ptr addend, const Geom& dims, bool accumulate,
          bool relu, Ptr stream);
// out[c] = sum of x[(n * channels + c) * inner + s] over n < outer, s < inner
void channel_sum(bool f64, Ptr x, Ptr out, std::int64_t outer, std::int64_t channels, std::int64_t inner, Ptr stream);

// conv = {n, c, h, w, oh, ow, kh, kw, sh, sw, pt, pl, dh, dw} (c: all input channels)
void im2col(bool f64, Ptr x, Ptr col, const Geom& conv, Ptr stream);
void col2im(bool f64, Ptr col, Ptr gx, const Geom& conv, Ptr stream);
void depthwise(bool f64, Ptr x, Ptr w, Ptr bias, Ptr residual, Ptr y, const Geom& conv, int mult, bool relu,
               Ptr stream);
void depthwise_backward_input(bool f64, Ptr g, Ptr w, Ptr gx, const Geom& conv, int mult, Ptr stream);
void depthwise_backward_weight(bool f64, Ptr g, Ptr x, Ptr gw, const Geom& conv, int mult, Ptr stream);


// Recurrent steps over (n, hid) states (see kernels/rnn.cuh); pointers may be 0 where the kernel says so.
void lstm_step(bool f64, Ptr gates, Ptr c_prev, Ptr c_next, Ptr tanh_c, Ptr h_out, std::int64_t ld_out, Ptr h_next,
               std::int64_t n, std::int64_t hid, Ptr stream);
void lstm_step_backward(bool f64, Ptr dh_out, std::int64_t ld_out, Ptr dh_carry, Ptr dc, Ptr gates, Ptr c_prev,
                        Ptr tanh_c, Ptr d_pre, Ptr dc_prev, std::int64_t n, std::int64_t hid, Ptr stream);
void gru_step(bool f64, Ptr gi, Ptr gh, Ptr h_prev, Ptr ghn, Ptr h_out, std::int64_t ld_out, Ptr h_next,
              std::int64_t n, std::int64_t hid, Ptr stream);
void gru_step_backward(bool f64, Ptr dh_out, std::int64_t ld_out, Ptr dh_carry, Ptr gates, Ptr ghn, Ptr h_prev,
                       Ptr d_gi, Ptr d_gh, Ptr dh_direct, std::int64_t n, std::int64_t hid, Ptr stream);
void rnn_step(bool f64, Ptr pre, Ptr h_out, std::int64_t ld_out, Ptr h_next, std::int64_t n, std::int64_t hid,
              bool relu, Ptr stream);
void rnn_step_backward(bool f64, Ptr dh_out, std::int64_t ld_out, Ptr dh_carry, Ptr h, std::int64_t ld_h, Ptr d_pre,
                       std::int64_t n, std::int64_t hid, bool relu, Ptr stream);

}  // namespace nnkern::cuda_ops
