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

}  // namespace nnkern::cuda_ops
