// Few channels at stride 1 (float32, AVX-512 family): the direct kernels
// (direct.h) on the planes in place, and image lanes (image_lanes.h, 16
// images per vector) for batches of 16 or more: the forward, grad_input as
// the conv of the padded grad_output with the flipped weight, and (direct
// kernels only) grad_weight.
#include <algorithm>
#include <vector>

#include "conv/conv_plan.h"
#include "conv/direct.h"
#include "conv/image_lanes.h"
#include "core/dispatch.h"
#include "core/thread_pool.h"
#include "core/workspace.h"

namespace nnkern::ops::detail {

// ---- few channels, stride 1 (AVX-512 float32): direct kernels (direct.h) on
// the input planes read in place (padded into scratch only when the conv pads).
// Chosen where an im2col matrix would cost more than its GEMM: at most
// kDirectMaxOut output channels and kDirectMaxDepth multiply-adds per output.

constexpr size_t kDirectMaxOut = 32, kDirectMaxDepth = 1024;
constexpr size_t kDirectWgradBatch = 8;  // images per weight-gradient kernel call

void (*const kDirectConv)(const conv::DirectConv&, size_t, size_t) = NNKERN_X86_ONLY(conv::f32_direct_conv_avx512);
void (*const kDirectWgrad)(const conv::DirectWgrad&, size_t, size_t, size_t, size_t, float*) =
    NNKERN_X86_ONLY(conv::f32_direct_wgrad_avx512);

bool (*const kDirectWgradLanes)(const conv::DirectWgradLanes&, size_t, size_t, float*) =
    NNKERN_X86_ONLY(conv::f32_direct_wgrad_lanes_avx512);

void (*const kDirectConvLanes)(const conv::DirectConvLanes&, const float*, size_t, size_t, float*, const float*) =
    NNKERN_X86_ONLY(conv::f32_direct_conv_lanes_avx512);

// The weight gradients' lane reduction (image_lanes.h), shared by the direct and image-lanes kernels.
void (*const kSumLanes)(const float*, size_t, float*) = NNKERN_X86_ONLY(conv::f32_sum_lanes_avx512);

namespace {

bool direct_isa() { return active_isa() == Isa::avx512 && kDirectConv != nullptr; }

// What every direct kernel needs: the family, one group, stride 1, a kernel
// wider than one tap, and at most `outputs` output channels (of the conv the
// kernel runs) of at most `depth` <= kDirectMaxDepth multiply-adds each. The
// forward takes them when the output has few channels.
bool direct_shape(const Plan& pl, size_t outputs, size_t depth) {
  const ConvGeometry& g = pl.g;
  return direct_isa() && g.groups == 1 && g.sh == 1 && g.sw == 1 && g.kh * g.kw > 1 && outputs <= kDirectMaxOut &&
         depth <= kDirectMaxDepth;
}

}  // namespace

bool direct_applies(const Plan& pl) { return pl.cg > 1 && direct_shape(pl, pl.g.o, pl.k); }

// grad_weight: as the forward, and also with one input channel (a LeNet
// 1 -> 6 first layer): the tile shares each input load among its outputs.
bool direct_grad_weight_applies(const Plan& pl) { return direct_shape(pl, pl.g.o, pl.k); }

// grad_input is a stride-1 conv of the padded grad_output (O channels) with
// the flipped, transposed weight (C outputs): few *input* channels.
bool direct_grad_input_applies(const Plan& pl) {
  return pl.cg > 1 && direct_shape(pl, pl.g.c, pl.g.o * pl.g.kh * pl.g.kw);
}

namespace {

// The C planes of image n as the kernels read them: in place when the conv
// reads no padding, else padded into `pad` (ph x pw each). Returns the planes.
struct DirectPlanes {
  size_t ph, pw, plane, pitch;
  bool in_place;
  explicit DirectPlanes(const ConvGeometry& g) {
    const DwPadded pd(g);
    ph = pd.ph;
    pw = pd.pw;
    in_place = g.pt == 0 && g.pl == 0 && ph <= g.h && pw <= g.w;
    plane = in_place ? g.h * g.w : ph * pw;
    pitch = in_place ? g.w : pw;
  }
  const float* image(const ConvGeometry& g, const float* x, size_t n, float* pad) const {
    const float* src = x + n * g.c * g.h * g.w;
    if (in_place) return src;
    for (size_t c = 0; c < g.c; ++c) {
      pad_plane(src + c * g.h * g.w, g.h, g.w, static_cast<ptrdiff_t>(g.pt), static_cast<ptrdiff_t>(g.pl), ph, pw,
                pad + c * plane);
    }
    return pad;
  }
};

// Runs body(in, n, k) for the tasks (image n, chunk k), n * chunks of them
// over the pool; `in` is image n's planes as the kernels read them (padded
// into the thread's scratch once per image when the conv pads).
template <class Body>
void for_image_chunks(const DirectPlanes& dp, const ConvGeometry& g, const float* x, size_t chunks,
                      const Body& body) {
  parallel_for(g.n * chunks, [&](size_t first, size_t last) {
    ScratchBuffer scratch;
    if (!dp.in_place) scratch = acquire_scratch(g.c * dp.plane * sizeof(float));
    size_t padded = g.n;  // the image now in scratch
    const float* in = nullptr;
    for (size_t t = first; t < last; ++t) {
      const size_t n = t / chunks, k = t % chunks;
      if (n != padded || dp.in_place) {
        in = dp.image(g, x, n, scratch.as<float>());
        padded = n;
      }
      body(in, n, k);
    }
  });
}

// Channel chunks per image: with fewer images than threads, each image's
// output channels are cut so that every thread has work.
size_t direct_chunks(size_t images, size_t channels) {
  const auto threads = static_cast<size_t>(get_num_threads());
  if (images >= threads) return 1;
  return std::max<size_t>(1, std::min(ceil_div(channels, 4), ceil_div(threads, std::max<size_t>(images, 1))));
}

// The forward with at most 16 output channels: the channels in the lanes
// (weights repacked per call: c * kh * kw vectors); tasks are images, or row
// ranges of an image when there are fewer images than threads.
void direct_forward_lanes(const Plan& pl, const float* x, const float* w, const float* bias, const float* residual,
                          bool relu, float* out) {
  const ConvGeometry& g = pl.g;
  const DirectPlanes dp(g);
  ScratchBuffer wbuf = acquire_scratch((pl.k + 1) * 16 * sizeof(float));
  float* const wt = wbuf.as<float>();
  float* const bias16 = wt + pl.k * 16;
  for (size_t t = 0; t < pl.k; ++t) {
    for (size_t o = 0; o < 16; ++o) wt[t * 16 + o] = o < g.o ? w[o * pl.k + t] : 0.0f;
  }
  for (size_t o = 0; o < 16; ++o) bias16[o] = bias != nullptr && o < g.o ? bias[o] : 0.0f;
  const conv::DirectConvLanes p{g.c, dp.plane, dp.pitch, wt, bias16, g.o, g.kh, g.kw, g.dh, g.dw, g.oh, g.ow, relu};
  const auto threads = static_cast<size_t>(get_num_threads());
  const size_t chunks = g.n >= threads ? 1 : std::min(g.oh, ceil_div(threads, g.n));
  for_image_chunks(dp, g, x, chunks, [&](const float* in, size_t n, size_t k) {
    kDirectConvLanes(p, in, k * g.oh / chunks, (k + 1) * g.oh / chunks, out + n * g.o * pl.p,
                     residual != nullptr ? residual + n * g.o * pl.p : nullptr);
  });
}

}  // namespace

void direct_forward(const Plan& pl, const float* x, const float* w, const float* bias, const float* residual,
                    bool relu, float* out) {
  const ConvGeometry& g = pl.g;
  if (pl.p == 0 || g.n == 0) return;
  if (kDirectConvLanes != nullptr && g.o <= 16) {
    direct_forward_lanes(pl, x, w, bias, residual, relu, out);
    return;
  }
  const DirectPlanes dp(g);
  const size_t chunks = direct_chunks(g.n, g.o);
  for_image_chunks(dp, g, x, chunks, [&](const float* in, size_t n, size_t k) {
    const conv::DirectConv p{in,   g.c,  dp.plane, dp.pitch, w,    g.o,
                             g.kh, g.kw, g.dh,     g.dw,     g.oh, g.ow,
                             out + n * g.o * pl.p,   bias,
                             residual != nullptr ? residual + n * g.o * pl.p : nullptr, relu,
                             dp.in_place ? x + g.n * g.c * pl.hw : in + g.c * dp.plane};
    kDirectConv(p, k * g.o / chunks, (k + 1) * g.o / chunks);
  });
}

namespace {

// The weight of grad_input's conv: w^T flipped, wt[c][o][i][j] = w[o][c][kh - 1 - i][kw - 1 - j].
std::vector<float> flipped_transposed(const ConvGeometry& g, const float* w) {
  const size_t taps = g.kh * g.kw;
  std::vector<float> wt(g.o * g.c * taps);
  for (size_t o = 0; o < g.o; ++o) {
    for (size_t c = 0; c < g.c; ++c) {
      for (size_t t = 0; t < taps; ++t) wt[(c * g.o + o) * taps + t] = w[(o * g.c + c) * taps + taps - 1 - t];
    }
  }
  return wt;
}

}  // namespace

// grad_input[n] = the stride-1 conv of grad_output[n] padded by (k - 1) * d -
// padding (cropped where negative) with w^T flipped (flipped_transposed).
void direct_grad_input(const Plan& pl, const float* go, const float* w, float* gx) {
  const ConvGeometry& g = pl.g;
  if (g.n == 0 || pl.hw == 0) return;
  const std::vector<float> wt = flipped_transposed(g, w);
  const size_t ph = g.h + (g.kh - 1) * g.dh, pw = g.w + (g.kw - 1) * g.dw;
  const size_t pitch = pw, plane = ph * pitch;
  const auto top = static_cast<ptrdiff_t>((g.kh - 1) * g.dh) - static_cast<ptrdiff_t>(g.pt);
  const auto left = static_cast<ptrdiff_t>((g.kw - 1) * g.dw) - static_cast<ptrdiff_t>(g.pl);
  const size_t chunks = direct_chunks(g.n, g.c);
  parallel_for(g.n * chunks, [&](size_t first, size_t last) {
    // 16 floats of slack after the planes: every tile's loads may read whole vectors
    ScratchBuffer scratch = acquire_scratch((g.o * plane + 16) * sizeof(float));
    float* const pad = scratch.as<float>();
    std::fill_n(pad + g.o * plane, 16, 0.0f);
    size_t padded = g.n;
    for (size_t t = first; t < last; ++t) {
      const size_t n = t / chunks, k = t % chunks;
      if (n != padded) {
        for (size_t o = 0; o < g.o; ++o) {
          pad_plane(go + (n * g.o + o) * pl.p, g.oh, g.ow, top, left, ph, pitch, pad + o * plane);
        }
        padded = n;
      }
      const conv::DirectConv p{pad,  g.o,  plane, pitch,  wt.data(), g.c,   g.kh,    g.kw,    g.dh,
                               g.dw, g.h,  g.w,     gx + n * g.c * pl.hw, nullptr,   nullptr, false,
                               pad + g.o * plane + 16};
      kDirectConv(p, k * g.c / chunks, (k + 1) * g.c / chunks);
    }
  });
}

namespace {

// grad_weight with the output channels in the lanes (9 to 16 of them: with
// fewer, most lanes would idle and the row tile is faster; kw 2..7):
// grad_output transposed once to pixel-major 16-float rows, then each thread
// owns a range of kernel rows (c, i), every tap one accumulator over all
// images in order. The bits do not depend on the thread count.
bool direct_grad_weight_lanes(const Plan& pl, const float* go, const float* x, float* gw) {
  const ConvGeometry& g = pl.g;
  if (kDirectWgradLanes == nullptr || g.o > 16 || g.o <= 8 || g.kw < 2 || g.kw > 7) return false;
  const DirectPlanes dp(g);
  if (!dp.in_place) return false;
  const size_t rows = g.c * g.kh;
  ScratchBuffer acc_buf = acquire_scratch(rows * g.kw * 16 * sizeof(float));
  float* const acc = acc_buf.as<float>();
  std::fill_n(acc, rows * g.kw * 16, 0.0f);
  if (pl.p != 0 && g.n != 0) {
    ScratchBuffer gt_buf = acquire_scratch(g.n * pl.p * 16 * sizeof(float));
    float* const gt = gt_buf.as<float>();
    parallel_for(g.n, [&](size_t n0, size_t n1) {
      for (size_t n = n0; n < n1; ++n) {
        float* const d = gt + n * pl.p * 16;
        const float* const src = go + n * g.o * pl.p;
        for (size_t q = 0; q < pl.p; ++q) {
          for (size_t o = 0; o < 16; ++o) d[q * 16 + o] = o < g.o ? src[o * pl.p + q] : 0.0f;
        }
      }
    });
    const conv::DirectWgradLanes p{x, dp.plane, dp.pitch, g.kh, g.kw, g.dh, g.dw, gt, g.oh, g.ow, g.n,
                                   g.c * pl.hw, pl.p * 16};
    parallel_for(rows, [&](size_t r0, size_t r1) { kDirectWgradLanes(p, r0, r1, acc); });
  }
  for (size_t o = 0; o < g.o; ++o) {
    for (size_t t = 0; t < pl.k; ++t) gw[o * pl.k + t] = acc[t * 16 + o];
  }
  return true;
}

}  // namespace

// grad_weight: 16-lane partial sums per (o, tap), images added in order, each
// thread owning a range of taps; the lanes reduced in double, in order. The
// bits do not depend on the thread count.
void direct_grad_weight(const Plan& pl, const float* go, const float* x, float* gw) {
  if (direct_grad_weight_lanes(pl, go, x, gw)) return;
  const ConvGeometry& g = pl.g;
  const size_t k = pl.k;
  std::vector<float> acc(g.o * k * 16, 0.0f);
  const DirectPlanes dp(g);
  if (pl.p != 0) {
    parallel_for(k, [&](size_t t0, size_t t1) {
      ScratchBuffer scratch;
      if (!dp.in_place) scratch = acquire_scratch(g.c * dp.plane * sizeof(float));
      // unpadded images go in batches (fewer passes over the accumulators; a
      // batch's planes stay in L2); padded ones one at a time through scratch
      const size_t batch = dp.in_place ? kDirectWgradBatch : 1;
      for (size_t n = 0; n < g.n; n += batch) {
        const size_t images = std::min(batch, g.n - n);
        const conv::DirectWgrad p{dp.image(g, x, n, scratch.as<float>()), g.c, dp.plane, dp.pitch, g.kh, g.kw,
                                  g.dh, g.dw, go + n * g.o * pl.p, g.o, g.oh, g.ow, images, g.c * pl.hw,
                                  g.o * pl.p};
        kDirectWgrad(p, 0, g.o, t0, t1, acc.data());
      }
    });
  }
  kSumLanes(acc.data(), g.o * k, gw);
}

// ---- image lanes (image_lanes.h, AVX-512 float32): 16 images per vector, for
// the direct kernels' shapes (few channels, stride 1) with a batch of 16+, one
// input channel included: the forward and grad_input. Each group of 16 images
// is transposed into the lanes layout, convolved with aligned loads only, and
// transposed back. LeNet at 2 threads: conv2 forward 242 -> 127 us, conv1
// 124 -> 91 us, conv2 grad_input 288 -> 220 us. The weight gradient in this
// layout (OB channels x one kernel row of taps per pixel) measured no faster
// than direct.h's (0.87-0.99x): it stays there.

constexpr size_t kLanesMinBatch = 16;

void (*const kToLanes)(const float*, size_t, size_t, size_t, size_t, size_t, size_t, size_t, size_t, size_t,
                       float*) = NNKERN_X86_ONLY(conv::f32_to_lanes_avx512);
void (*const kFromLanes)(const float*, size_t, size_t, size_t, size_t, size_t, const float*, bool, float*) =
    NNKERN_X86_ONLY(conv::f32_from_lanes_avx512);
void (*const kConvLanes)(const conv::LanesConv&, size_t, size_t, float*) =
    NNKERN_X86_ONLY(conv::f32_conv_lanes_avx512);

// A group's input and output planes in lanes layout stay in L2 (LeNet conv1: 64 + 301 KB).
constexpr size_t kLanesMaxGroupBytes = size_t{2} << 20;

namespace {

// As direct_shape (at most `outputs` output channels of at most `depth`
// multiply-adds each, stride 1), for a batch of kLanesMinBatch or more whose
// group buffers (in_planes planes rows x pitch in, `outputs` planes of the
// output) fit kLanesMaxGroupBytes.
bool lanes_shape(const Plan& pl, size_t outputs, size_t depth, size_t in_planes, size_t rows, size_t pitch,
                 size_t out_pixels) {
  return kConvLanes != nullptr && direct_shape(pl, outputs, depth) && pl.g.n >= kLanesMinBatch &&
         (in_planes * rows * pitch + outputs * out_pixels) * 16 * sizeof(float) <= kLanesMaxGroupBytes;
}

}  // namespace

bool lanes_applies(const Plan& pl) {
  const DwPadded pd(pl.g);
  return lanes_shape(pl, pl.g.o, pl.k, pl.g.c, pd.ph, pd.pw, pl.p);
}
// grad_input as a conv of grad_output padded by (k - 1) * d - padding (not cropped)
bool lanes_grad_input_applies(const Plan& pl) {
  const ConvGeometry& g = pl.g;
  return g.pt <= (g.kh - 1) * g.dh && g.pl <= (g.kw - 1) * g.dw &&
         lanes_shape(pl, g.c, g.o * g.kh * g.kw, g.o, g.h + (g.kh - 1) * g.dh, g.w + (g.kw - 1) * g.dw, pl.hw);
}

namespace {

// A stride-1 conv of n images x (N, c, h, w) placed at (top, left) in planes
// rows x pitch, into out (N, o, oh, ow) with the bias, residual and ReLU.
struct LanesJob {
  const float* x;
  size_t c, h, w, top, left, rows, pitch;
  const float* weight;
  const float* bias;
  size_t o, kh, kw, dh, dw, oh, ow;
  const float* residual;
  bool relu;
  float* out;
};

// One task per group of 16 images (and output-channel range, when there are
// fewer groups than threads): transpose in, convolve, transpose out.
void lanes_conv(const LanesJob& j, size_t n) {
  const size_t groups = ceil_div(n, 16), threads = static_cast<size_t>(get_num_threads());
  const size_t split = groups >= threads ? 1 : std::min(j.o, ceil_div(threads, groups));
  const size_t in_elems = j.c * j.rows * j.pitch * 16, plane = j.oh * j.ow;
  run_tasks(groups * split, (in_elems + j.o * plane * 16) * sizeof(float), [&](size_t t, void* scratch) {
    const size_t grp = t / split, k = t % split;
    float* const src = static_cast<float*>(scratch);  // 64-byte aligned, as is dst (16-float multiples)
    float* const dst = src + in_elems;
    const size_t n0 = grp * 16, count = std::min<size_t>(16, n - n0), image = j.c * j.h * j.w;
    kToLanes(j.x + n0 * image, count, image, j.c, j.h, j.w, j.top, j.left, j.rows, j.pitch, src);
    const size_t row_hi = j.top + (j.top < j.rows ? std::min(j.h, j.rows - j.top) : 0);
    const conv::LanesConv p{src,    j.c,    j.rows, j.pitch, j.top, row_hi, j.weight, j.bias,
                            j.o,    j.kh,   j.kw,   j.dh,    j.dw,  j.oh,   j.ow};
    const size_t o0 = k * j.o / split, o1 = (k + 1) * j.o / split;
    kConvLanes(p, o0, o1, dst);
    kFromLanes(dst, o0, o1, plane, count, j.o * plane, j.residual != nullptr ? j.residual + n0 * j.o * plane : nullptr,
               j.relu, j.out + n0 * j.o * plane);
  });
}

}  // namespace

void lanes_forward(const Plan& pl, const float* x, const float* w, const float* bias, const float* residual,
                   bool relu, float* out) {
  const ConvGeometry& g = pl.g;
  if (pl.p == 0 || g.n == 0) return;
  const DwPadded pd(g);
  lanes_conv({x, g.c, g.h, g.w, g.pt, g.pl, pd.ph, pd.pw, w, bias, g.o, g.kh, g.kw, g.dh, g.dw, g.oh, g.ow,
              residual, relu, out},
             g.n);
}

// grad_input: the conv of grad_output padded by (k - 1) * d - padding with the
// flipped, transposed weight, as direct_grad_input.
void lanes_grad_input(const Plan& pl, const float* go, const float* w, float* gx) {
  const ConvGeometry& g = pl.g;
  if (g.n == 0 || pl.hw == 0) return;
  const std::vector<float> wt = flipped_transposed(g, w);
  lanes_conv({go, g.o, g.oh, g.ow, (g.kh - 1) * g.dh - g.pt, (g.kw - 1) * g.dw - g.pl, g.h + (g.kh - 1) * g.dh,
              g.w + (g.kw - 1) * g.dw, wt.data(), nullptr, g.c, g.kh, g.kw, g.dh, g.dw, g.h, g.w, nullptr, false, gx},
             g.n);
}

}  // namespace nnkern::ops::detail
