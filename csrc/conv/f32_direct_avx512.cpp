// Direct few-channel convolution kernels (direct.h), AVX-512 float32.
//
// Row tiles (pixels in the lanes):
//  - forward: OB output channels x RB row segments (16 pixels each, masked
//    at the row's end): per tap, RB loads of the shifted input rows and OB
//    weight broadcasts feed OB * RB FMAs (4 x 6: 10 loads for 24 FMAs);
//  - weight gradient: OB output channels x TB taps of lane-partial sums; per
//    segment, OB grad_output loads and TB shifted input loads feed OB * TB FMAs.
// Their shifted loads mostly cross a cache line, which holds them near half
// the FMA rate. With 9..16 output channels the lanes forms (output channels
// in the lanes: aligned vectors and broadcasts only) run about twice as fast.
#include <immintrin.h>

#include <algorithm>
#include <array>
#include <cstddef>
#include <utility>
#include <vector>

#include "conv/blocks.h"
#include "conv/direct.h"

namespace nnkern::conv {
namespace {

using std::size_t;

constexpr int kMaxOB = 6, kMaxRB = 6;       // forward tile bounds
constexpr int kMaxWgO = 4, kMaxWgT = 6;     // weight-gradient tile bounds

inline __mmask16 lanes(size_t n) { return n >= 16 ? __mmask16(0xffff) : _cvtu32_mask16((1u << n) - 1u); }

// FULL: every load may read 16 lanes (the buffer goes on past the last
// segment's taps): unmasked loads, which run ~25% faster than masked ones here.
template <int OB, int RB, bool FULL>
void conv_tile(const DirectConv& p, size_t o0, size_t s0, size_t spr) {
  size_t in_off[RB], out_off[RB];
  __mmask16 m[RB];
  _Pragma("GCC unroll 8") for (int r = 0; r < RB; ++r) {
    const size_t s = s0 + static_cast<size_t>(r), y = s / spr, x = (s % spr) * 16;
    in_off[r] = y * p.pitch + x;
    out_off[r] = y * p.ow + x;
    m[r] = lanes(p.ow - x);
  }
  const size_t taps = p.kh * p.kw, ws = p.c * taps, oplane = p.oh * p.ow;
  __m512 acc[OB][RB];
  _Pragma("GCC unroll 8") for (int ob = 0; ob < OB; ++ob) {
    const __m512 b = _mm512_set1_ps(p.bias != nullptr ? p.bias[o0 + static_cast<size_t>(ob)] : 0.0f);
    _Pragma("GCC unroll 8") for (int r = 0; r < RB; ++r) acc[ob][r] = b;
  }
  const float* const wo = p.w + o0 * ws;
  for (size_t c = 0; c < p.c; ++c) {
    const float* const inc = p.in + c * p.plane;
    for (size_t i = 0; i < p.kh; ++i) {
      const float* const row = inc + i * p.dh * p.pitch;
      const float* const wi = wo + c * taps + i * p.kw;
      for (size_t j = 0; j < p.kw; ++j) {
        const float* const src = row + j * p.dw;
        __m512 v[RB];
        _Pragma("GCC unroll 8") for (int r = 0; r < RB; ++r) {
          v[r] = FULL ? _mm512_loadu_ps(src + in_off[r]) : _mm512_maskz_loadu_ps(m[r], src + in_off[r]);
        }
        _Pragma("GCC unroll 8") for (int ob = 0; ob < OB; ++ob) {
          const __m512 wv = _mm512_set1_ps(wi[static_cast<size_t>(ob) * ws + j]);
          _Pragma("GCC unroll 8") for (int r = 0; r < RB; ++r) acc[ob][r] = _mm512_fmadd_ps(wv, v[r], acc[ob][r]);
        }
      }
    }
  }
  const __m512 zero = _mm512_setzero_ps();
  _Pragma("GCC unroll 8") for (int ob = 0; ob < OB; ++ob) {
    const size_t plane = (o0 + static_cast<size_t>(ob)) * oplane;
    _Pragma("GCC unroll 8") for (int r = 0; r < RB; ++r) {
      __m512 a = acc[ob][r];
      if (p.residual != nullptr) a = _mm512_add_ps(a, _mm512_maskz_loadu_ps(m[r], p.residual + plane + out_off[r]));
      // max(0, a) returns a when a is NaN (the second operand): NaN passes, as torch.relu
      if (p.relu) a = _mm512_max_ps(zero, a);
      _mm512_mask_storeu_ps(p.out + plane + out_off[r], m[r], a);
    }
  }
}

template <int OB, int TB>
void wgrad_tile(const DirectWgrad& p, size_t o0, const size_t* toff, size_t t0, size_t k, float* acc) {
  const size_t oplane = p.oh * p.ow;
  __m512 a[OB][TB];
  _Pragma("GCC unroll 8") for (int ob = 0; ob < OB; ++ob) {
    _Pragma("GCC unroll 8") for (int t = 0; t < TB; ++t) a[ob][t] = _mm512_loadu_ps(acc + ((o0 + ob) * k + t0 + t) * 16);
  }
  size_t off[TB];
  _Pragma("GCC unroll 8") for (int t = 0; t < TB; ++t) off[t] = toff[t];
  for (size_t n = 0; n < p.images; ++n) {
    const float* const in = p.in + n * p.in_image;
    const float* const g = p.g + n * p.g_image + o0 * oplane;
    for (size_t y = 0; y < p.oh; ++y) {
      for (size_t x = 0; x < p.ow; x += 16) {
        const __mmask16 m = lanes(p.ow - x);
        const float* const gy = g + y * p.ow + x;
        const float* const iy = in + y * p.pitch + x;
        __m512 gv[OB];
        _Pragma("GCC unroll 8") for (int ob = 0; ob < OB; ++ob) {
          gv[ob] = _mm512_maskz_loadu_ps(m, gy + static_cast<size_t>(ob) * oplane);
        }
        _Pragma("GCC unroll 8") for (int t = 0; t < TB; ++t) {
          const __m512 v = _mm512_maskz_loadu_ps(m, iy + off[t]);
          _Pragma("GCC unroll 8") for (int ob = 0; ob < OB; ++ob) a[ob][t] = _mm512_fmadd_ps(gv[ob], v, a[ob][t]);
        }
      }
    }
  }
  _Pragma("GCC unroll 8") for (int ob = 0; ob < OB; ++ob) {
    _Pragma("GCC unroll 8") for (int t = 0; t < TB; ++t) _mm512_storeu_ps(acc + ((o0 + ob) * k + t0 + t) * 16, a[ob][t]);
  }
}

// Output channels in the lanes (O <= 16): two kernel rows (c, i) of KW taps
// each, one accumulator per tap holding every output channel; per pixel one
// aligned grad_output vector and 2 * KW broadcasts of input pixels feed 2 * KW
// FMAs. No vector load crosses a cache line (the row-vectorized tile's
// unaligned loads do, and run at half the FMA rate).
template <int KW>
void wgrad_lanes_rows(const DirectWgradLanes& p, size_t r0, size_t rows, float* acc) {
  const size_t kh = p.kh;
  for (size_t r = r0; r < r0 + rows; r += 2) {
    const bool two = r + 1 < r0 + rows;
    const size_t off0 = r / kh * p.plane + r % kh * p.dh * p.pitch;
    const size_t off1 = two ? (r + 1) / kh * p.plane + (r + 1) % kh * p.dh * p.pitch : off0;
    __m512 a0[KW], a1[KW];
    _Pragma("GCC unroll 8") for (int j = 0; j < KW; ++j) {
      a0[j] = _mm512_load_ps(acc + (r * KW + j) * 16);
      a1[j] = two ? _mm512_load_ps(acc + ((r + 1) * KW + j) * 16) : _mm512_setzero_ps();
    }
    for (size_t n = 0; n < p.images; ++n) {
      const float* const in = p.in + n * p.in_image;
      const float* gt = p.gt + n * p.gt_image;
      for (size_t y = 0; y < p.oh; ++y) {
        const float* const x0 = in + off0 + y * p.pitch;
        const float* const x1 = in + off1 + y * p.pitch;
        for (size_t x = 0; x < p.ow; ++x, gt += 16) {
          const __m512 gv = _mm512_load_ps(gt);
          _Pragma("GCC unroll 8") for (int j = 0; j < KW; ++j) {
            a0[j] = _mm512_fmadd_ps(gv, _mm512_set1_ps(x0[x + static_cast<size_t>(j) * p.dw]), a0[j]);
            a1[j] = _mm512_fmadd_ps(gv, _mm512_set1_ps(x1[x + static_cast<size_t>(j) * p.dw]), a1[j]);
          }
        }
      }
    }
    _Pragma("GCC unroll 8") for (int j = 0; j < KW; ++j) {
      _mm512_store_ps(acc + (r * KW + j) * 16, a0[j]);
      if (two) _mm512_store_ps(acc + ((r + 1) * KW + j) * 16, a1[j]);
    }
  }
}

// Forward with the output channels in the lanes (O <= 16): R output pixels
// of one row, one accumulator each; per tap one aligned weight vector and R
// broadcasts of input pixels (FMAs with a broadcast operand). Each output is
// the same chain as conv_tile's (bias, then taps in (c, i, j) order).
template <int R>
void conv_lanes_segment(const DirectConvLanes& p, const float* in, size_t y, size_t x0, float* out,
                        const float* residual) {
  __m512 acc[R];
  const __m512 b = _mm512_load_ps(p.bias16);
  _Pragma("GCC unroll 16") for (int r = 0; r < R; ++r) acc[r] = b;
  const float* wt = p.wt;
  for (size_t c = 0; c < p.c; ++c) {
    for (size_t i = 0; i < p.kh; ++i) {
      const float* const row = in + c * p.plane + (y + i * p.dh) * p.pitch + x0;
      for (size_t j = 0; j < p.kw; ++j, wt += 16) {
        const __m512 w = _mm512_load_ps(wt);
        const float* const src = row + j * p.dw;
        _Pragma("GCC unroll 16") for (int r = 0; r < R; ++r) acc[r] = _mm512_fmadd_ps(w, _mm512_set1_ps(src[r]), acc[r]);
      }
    }
  }
  alignas(64) float tile[R][16];
  _Pragma("GCC unroll 16") for (int r = 0; r < R; ++r) _mm512_store_ps(tile[r], acc[r]);
  const size_t oplane = p.oh * p.ow, at = y * p.ow + x0;
  for (size_t o = 0; o < p.o; ++o) {
    float* const d = out + o * oplane + at;
    const float* const res = residual != nullptr ? residual + o * oplane + at : nullptr;
    for (int r = 0; r < R; ++r) {
      float v = tile[r][o];
      if (res != nullptr) v += res[r];
      // NaN fails the compare and passes through, as torch.relu
      if (p.relu) v = v < 0.0f ? 0.0f : v;
      d[r] = v;
    }
  }
}

using LanesSegmentFn = void (*)(const DirectConvLanes&, const float*, size_t, size_t, float*, const float*);

template <int... R>
constexpr std::array<LanesSegmentFn, sizeof...(R)> lanes_table(std::integer_sequence<int, R...>) {
  return {&conv_lanes_segment<R + 1>...};
}
constexpr auto kLanesSegments = lanes_table(std::make_integer_sequence<int, 16>());

// Tables of the instantiations: [OB - 1][RB - 1].
using ConvTileFn = void (*)(const DirectConv&, size_t, size_t, size_t);
struct ConvTilePair {
  ConvTileFn masked, full;
};
using WgradTileFn = void (*)(const DirectWgrad&, size_t, const size_t*, size_t, size_t, float*);

template <int OB, int... R>
constexpr std::array<ConvTilePair, sizeof...(R)> conv_row(std::integer_sequence<int, R...>) {
  return {ConvTilePair{&conv_tile<OB, R + 1, false>, &conv_tile<OB, R + 1, true>}...};
}
template <int... O>
constexpr std::array<std::array<ConvTilePair, kMaxRB>, sizeof...(O)> conv_table(std::integer_sequence<int, O...>) {
  return {conv_row<O + 1>(std::make_integer_sequence<int, kMaxRB>())...};
}
constexpr auto kConvTiles = conv_table(std::make_integer_sequence<int, kMaxOB>());

template <int OB, int... T>
constexpr std::array<WgradTileFn, sizeof...(T)> wgrad_row(std::integer_sequence<int, T...>) {
  return {&wgrad_tile<OB, T + 1>...};
}
template <int... O>
constexpr std::array<std::array<WgradTileFn, kMaxWgT>, sizeof...(O)> wgrad_table(std::integer_sequence<int, O...>) {
  return {wgrad_row<O + 1>(std::make_integer_sequence<int, kMaxWgT>())...};
}
constexpr auto kWgradTiles = wgrad_table(std::make_integer_sequence<int, kMaxWgO>());

}  // namespace

void f32_direct_conv_avx512(const DirectConv& p, size_t o0, size_t o1) {
  const size_t n_o = o1 - o0, spr = (p.ow + 15) / 16, segments = p.oh * spr;
  if (n_o == 0 || segments == 0) return;
  // Up to six channels: one block, rows as many as the 24 accumulators allow;
  // more: blocks of at most 4 channels against 6 segments.
  const size_t most_o = n_o <= static_cast<size_t>(kMaxOB) ? n_o : 4;
  const size_t most_r = std::min<size_t>(kMaxRB, 24 / most_o);
  const Blocks ob(n_o, most_o), rb(segments, most_r);
  // the furthest a tile's 16-lane loads reach: its last segment, the last tap
  const size_t reach = (p.c - 1) * p.plane + (p.kh - 1) * p.dh * p.pitch + (p.kw - 1) * p.dw + 16;
  for (size_t br = 0; br < rb.parts; ++br) {
    const size_t s0 = rb.start(br), s1 = rb.start(br + 1);
    const size_t last = s1 - 1, y = last / spr, x = (last % spr) * 16;
    const bool full = p.in + y * p.pitch + x + reach <= p.in_end;
    for (size_t bo = 0; bo < ob.parts; ++bo) {
      const size_t a0 = ob.start(bo), a1 = ob.start(bo + 1);
      const ConvTilePair& tile = kConvTiles[a1 - a0 - 1][s1 - s0 - 1];
      (full ? tile.full : tile.masked)(p, o0 + a0, s0, spr);
    }
  }
}

void f32_direct_wgrad_avx512(const DirectWgrad& p, size_t o0, size_t o1, size_t t0, size_t t1, float* acc) {
  const size_t k = p.c * p.kh * p.kw;
  // tap offsets in the input planes, walked without divisions
  std::vector<size_t> toff(t1 - t0);
  size_t c = t0 / (p.kh * p.kw), i = t0 / p.kw % p.kh, j = t0 % p.kw;
  for (size_t& off : toff) {
    off = c * p.plane + i * p.dh * p.pitch + j * p.dw;
    if (++j == p.kw) {
      j = 0;
      if (++i == p.kh) {
        i = 0;
        ++c;
      }
    }
  }
  const Blocks ob(o1 - o0, kMaxWgO), tb(t1 - t0, kMaxWgT);
  for (size_t bt = 0; bt < tb.parts; ++bt) {
    const size_t a0 = tb.start(bt), a1 = tb.start(bt + 1);
    for (size_t bo = 0; bo < ob.parts; ++bo) {
      const size_t b0 = ob.start(bo), b1 = ob.start(bo + 1);
      kWgradTiles[b1 - b0 - 1][a1 - a0 - 1](p, o0 + b0, toff.data() + a0, t0 + a0, k, acc);
    }
  }
}

void f32_direct_conv_lanes_avx512(const DirectConvLanes& p, const float* in, std::size_t y0, std::size_t y1,
                                  float* out, const float* residual) {
  const Blocks segs(p.ow, 16);
  for (size_t y = y0; y < y1; ++y) {
    for (size_t s = 0; s < segs.parts; ++s) {
      const size_t x0 = segs.start(s), x1 = segs.start(s + 1);
      kLanesSegments[x1 - x0 - 1](p, in, y, x0, out, residual);
    }
  }
}

bool f32_direct_wgrad_lanes_avx512(const DirectWgradLanes& p, size_t r0, size_t r1, float* acc) {
  switch (p.kw) {
    case 2: wgrad_lanes_rows<2>(p, r0, r1 - r0, acc); return true;
    case 3: wgrad_lanes_rows<3>(p, r0, r1 - r0, acc); return true;
    case 4: wgrad_lanes_rows<4>(p, r0, r1 - r0, acc); return true;
    case 5: wgrad_lanes_rows<5>(p, r0, r1 - r0, acc); return true;
    case 6: wgrad_lanes_rows<6>(p, r0, r1 - r0, acc); return true;
    case 7: wgrad_lanes_rows<7>(p, r0, r1 - r0, acc); return true;
    default: return false;
  }
}

}  // namespace nnkern::conv
