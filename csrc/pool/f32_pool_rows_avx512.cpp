// 16 outputs of a row per vector. Stride-2 taps are the even lanes of two
// adjacent 16-float loads (one permute); every load is masked to the columns
// the outputs use, so nothing past the last window is read.
#include <immintrin.h>

#include <cmath>
#include <cstdint>

#include "pool/pool_rows.h"
#include "vmath/hsum4_avx512.h"

namespace nnkern::pool {
namespace {

inline __mmask16 first_lanes(std::size_t n) { return _cvtu32_mask16(n >= 16 ? 0xffffu : (1u << n) - 1u); }

inline void store_indices(std::int64_t* idx, __m512i v, __mmask16 m) {
  _mm512_mask_storeu_epi64(idx, static_cast<__mmask8>(m & 0xff), _mm512_cvtepi32_epi64(_mm512_castsi512_si256(v)));
  _mm512_mask_storeu_epi64(idx + 8, static_cast<__mmask8>(m >> 8),
                           _mm512_cvtepi32_epi64(_mm512_extracti64x4_epi64(v, 1)));
}


// Tap values of 16 outputs (masks of the two loads given): p[k*SW], k < 16.
template <int SW>
inline __m512 taps16(const float* p, __mmask16 m_lo, __mmask16 m_hi) {
  if constexpr (SW == 1) {
    return _mm512_maskz_loadu_ps(m_lo, p);
  } else {
    const __m512i even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    return _mm512_permutex2var_ps(_mm512_maskz_loadu_ps(m_lo, p), even, _mm512_maskz_loadu_ps(m_hi, p + 16));
  }
}

struct Row {
  std::size_t nrows;
  const float* const* rows;
  const std::int32_t* base;
  std::size_t kw, dw;
};

// B vectors of 16 outputs, the first at column c, each vector's loads masked
// by m_lo/m_hi. The common path replaces on `v > max` only and checks the
// taps for NaN once at the end (a running sum: NaN in, NaN out; an inf - inf
// false alarm only costs the exact rerun); a block with NaN reruns with the
// NaN test in every step, PyTorch's rule (a NaN replaces, the last one stays).
template <int SW, int B, bool kNan, bool kIdx>
inline bool maxpool_vecs(const Row& r, std::size_t c, const __mmask16* m_lo_in, const __mmask16* m_hi_in,
                         __m512* best_out, __m512i* where_out) {
  // local copies the compiler keeps in registers (__m512 may alias anything:
  // working through the out pointers would store them every step)
  __m512 best[B];
  __m512i where[B];
  __mmask16 m_lo[B], m_hi[B];
  _Pragma("GCC unroll 4")
  for (int b = 0; b < B; ++b) {
    m_lo[b] = m_lo_in[b];
    m_hi[b] = m_hi_in[b];
  }
  const std::size_t nrows = r.nrows, kw = r.kw, dw = r.dw;
  const __m512i lanes = _mm512_mullo_epi32(_mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
                                           _mm512_set1_epi32(SW));
  __m512 check[B];
  _Pragma("GCC unroll 4")
  for (int b = 0; b < B; ++b) {
    best[b] = _mm512_set1_ps(-__builtin_inff());
    // the first tap's index, kept when no tap beats -inf
    where[b] = _mm512_add_epi32(lanes, _mm512_set1_epi32(r.base[0] + static_cast<int>(c + 16 * SW * b)));
    check[b] = _mm512_setzero_ps();
  }
  for (std::size_t i = 0; i < nrows; ++i) {
    const float* row = r.rows[i];
    const int base = r.base[i];
    for (std::size_t j = 0; j < kw; ++j) {
      const std::size_t col = c + j * dw;
      // this tap's flat indices for vector 0; vector b adds 16*SW*b
      const __m512i cand = _mm512_add_epi32(lanes, _mm512_set1_epi32(base + static_cast<int>(col)));
      _Pragma("GCC unroll 4")
      for (int b = 0; b < B; ++b) {
        const std::size_t colb = col + 16 * SW * b;
        const __m512 v = taps16<SW>(row + colb, m_lo[b], m_hi[b]);
        if constexpr (!kIdx && !kNan) {
          // max(v, best) = v > best ? v : best: the replace rule without NaN (the check catches it)
          check[b] = _mm512_add_ps(check[b], v);
          best[b] = _mm512_max_ps(v, best[b]);
          continue;
        }
        __mmask16 take = _mm512_cmp_ps_mask(v, best[b], _CMP_GT_OQ);
        if constexpr (kNan) {
          take |= _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q);
        } else {
          check[b] = _mm512_add_ps(check[b], v);
        }
        best[b] = _mm512_mask_mov_ps(best[b], take, v);
        where[b] = b == 0 ? _mm512_mask_mov_epi32(where[b], take, cand)
                          : _mm512_mask_add_epi32(where[b], take, cand, _mm512_set1_epi32(16 * SW * b));
      }
    }
  }
  _Pragma("GCC unroll 4")
  for (int b = 0; b < B; ++b) {
    best_out[b] = best[b];
    where_out[b] = where[b];
  }
  if constexpr (kNan) {
    return true;
  } else {
    __mmask16 nan = 0;
    _Pragma("GCC unroll 4")
    for (int b = 0; b < B; ++b) nan |= _mm512_cmp_ps_mask(check[b], check[b], _CMP_UNORD_Q);
    return nan == 0;
  }
}

template <int SW, int B, bool kIdx>
inline void maxpool_block(const Row& r, std::size_t c, const __mmask16* m_lo, const __mmask16* m_hi,
                          const __mmask16* m_out, float* out, std::int64_t* idx) {
  __m512 best[B];
  __m512i where[B];
  if (!maxpool_vecs<SW, B, false, kIdx>(r, c, m_lo, m_hi, best, where)) {
    maxpool_vecs<SW, B, true, true>(r, c, m_lo, m_hi, best, where);
  }
  _Pragma("GCC unroll 4")
  for (int b = 0; b < B; ++b) {
    _mm512_mask_storeu_ps(out + 16 * b, m_out[b], best[b]);
    if constexpr (kIdx) store_indices(idx + 16 * b, where[b], m_out[b]);
  }
}

// Loads of a vector of nb outputs read 1 + (nb-1)*SW columns from each tap's first.
template <int SW>
inline void load_masks(std::size_t nb, __mmask16* m_lo, __mmask16* m_hi) {
  const std::size_t used = nb == 0 ? 0 : 1 + (nb - 1) * SW;
  *m_lo = first_lanes(used);
  *m_hi = first_lanes(used > 16 ? used - 16 : 0);
}

template <int SW, int B, bool kIdx>
void maxpool_vectors(const Row& r, std::size_t n, std::size_t c, float* out, std::int64_t* idx) {
  __mmask16 lo[B], hi[B], m[B];
  _Pragma("GCC unroll 4")
  for (int b = 0; b < B; ++b) {
    const std::size_t nb = n > 16 * static_cast<std::size_t>(b) ? n - 16 * b : 0;
    load_masks<SW>(nb < 16 ? nb : 16, &lo[b], &hi[b]);
    m[b] = first_lanes(nb);
  }
  maxpool_block<SW, B, kIdx>(r, c, lo, hi, m, out, idx);
}

// Four vectors (64 outputs) at a time, the row's rest in one block of 1-4
// vectors: independent compare/blend chains hide each other's latency.
// Without indices (kIdx false, idx unused) a tap is one max per vector.
template <int SW, bool kIdx>
void maxpool_row(const Row& r, std::size_t n, std::size_t c0, float* out, std::int64_t* idx) {
  std::size_t k = 0;
  for (; k + 64 <= n; k += 64) maxpool_vectors<SW, 4, kIdx>(r, 64, c0 + k * SW, out + k, kIdx ? idx + k : nullptr);
  const std::size_t rest = n - k;
  if (rest > 48) {
    maxpool_vectors<SW, 4, kIdx>(r, rest, c0 + k * SW, out + k, kIdx ? idx + k : nullptr);
  } else if (rest > 32) {
    maxpool_vectors<SW, 3, kIdx>(r, rest, c0 + k * SW, out + k, kIdx ? idx + k : nullptr);
  } else if (rest > 16) {
    maxpool_vectors<SW, 2, kIdx>(r, rest, c0 + k * SW, out + k, kIdx ? idx + k : nullptr);
  } else if (rest > 0) {
    maxpool_vectors<SW, 1, kIdx>(r, rest, c0 + k * SW, out + k, kIdx ? idx + k : nullptr);
  }
}

// Values alone, stride 2, kw 2 or 3, dw 1 (the common pools): the max over
// the window's rows first, once per input column (each input loaded once),
// then over the kw columns of each output (even lanes, odd lanes, even lanes
// one column on). Without NaN every output is its window's maximum whatever
// the order, except a zero (-0 and +0 compare equal, PyTorch keeps the
// first): a vector with a zero output, or a NaN among the columns it loaded
// (a running sum of the loads, as maxpool_vecs), reruns in scan order.
inline __m512 column_max(const Row& r, std::size_t col, __mmask16 m, __m512* check) {
  __m512 v = _mm512_maskz_loadu_ps(m, r.rows[0] + col);
  *check = _mm512_add_ps(*check, v);
  for (std::size_t i = 1; i < r.nrows; ++i) {
    const __m512 t = _mm512_maskz_loadu_ps(m, r.rows[i] + col);
    *check = _mm512_add_ps(*check, t);
    v = _mm512_max_ps(t, v);
  }
  return v;
}

template <int KW>
void maxpool_row_s2_values(const Row& r, std::size_t n, std::size_t c0, float* out) {
  const __m512i even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
  const __m512i odd = _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
  const std::size_t last = c0 + 2 * (n - 1) + KW - 1;  // the last column any window reads
  const auto cols_from = [last](std::size_t q) { return q > last ? __mmask16(0) : first_lanes(last - q + 1); };
  __m512 check_lo = _mm512_setzero_ps();
  __m512 lo = column_max(r, c0, cols_from(c0), &check_lo);
  for (std::size_t k = 0; k < n; k += 16) {
    const std::size_t nb = n - k < 16 ? n - k : 16;
    const std::size_t c = c0 + 2 * k;
    __m512 check = check_lo, check_next = _mm512_setzero_ps();
    const __m512 hi = column_max(r, c + 16, cols_from(c + 16), &check);
    const __m512 next = column_max(r, c + 32, cols_from(c + 32), &check_next);
    const __m512 t0 = _mm512_permutex2var_ps(lo, even, hi);
    __m512 best = _mm512_max_ps(_mm512_permutex2var_ps(lo, odd, hi), t0);
    if constexpr (KW == 3) {
      // column c + 2k + 2 of output k: t0's next lane, and the next block's first column for lane 15
      best = _mm512_max_ps(
          _mm512_castsi512_ps(_mm512_alignr_epi32(_mm512_castps_si512(next), _mm512_castps_si512(t0), 1)), best);
      check = _mm512_add_ps(check, check_next);
    }
    const __mmask16 m = first_lanes(nb);
    if ((_mm512_mask_cmp_ps_mask(m, best, _mm512_setzero_ps(), _CMP_EQ_OQ) |
         _mm512_cmp_ps_mask(check, check, _CMP_UNORD_Q)) != 0) {
      maxpool_vectors<2, 1, false>(r, nb, c, out + k, nullptr);
    } else {
      _mm512_mask_storeu_ps(out + k, m, best);
    }
    lo = next;
    check_lo = check_next;
  }
}

// out = sum / divisor; a power-of-two divisor multiplies by its (exact)
// reciprocal instead, the same bits without a division per vector.
inline bool power_of_two(float d) {
  int e = 0;
  return d > 0.0f && std::frexp(d, &e) == 0.5f && e > -125 && e < 127;
}

template <bool kMul>
inline __m512 scale(__m512 sum, __m512 d) {
  return kMul ? _mm512_mul_ps(sum, d) : _mm512_div_ps(sum, d);
}

template <int SW, bool kMul>
void avgpool_row(std::size_t nrows, const float* const* rows, std::size_t kw, std::size_t n, std::size_t c0,
                 __m512 d, float* out, std::ptrdiff_t shift) {
  for (std::size_t k = 0; k < n; k += 16) {
    const std::size_t nb = n - k < 16 ? n - k : 16;
    __mmask16 lo, hi;
    load_masks<SW>(nb, &lo, &hi);
    const std::size_t c = c0 + k * SW;
    __m512 sum = _mm512_setzero_ps();
    for (std::size_t i = 0; i < nrows; ++i) {
      for (std::size_t j = 0; j < kw; ++j) sum = _mm512_add_ps(sum, taps16<SW>(rows[i] + shift + c + j, lo, hi));
    }
    _mm512_mask_storeu_ps(out + k, first_lanes(nb), scale<kMul>(sum, d));
  }
}

constexpr std::ptrdiff_t kPrefetchRows = 8;

// kw = 2, stride 2: the two taps of a row are the even and odd lanes of the
// same two loads (each input column loaded once), summed in the same order.
// The masks of the row's last, partial vector are computed once per call.
template <bool kMul>
void avgpool_rows_k2s2(std::size_t nrows, const float* const* rows, std::size_t n, std::size_t c0, __m512 d,
                       float* out, std::size_t count, std::ptrdiff_t in_step, std::ptrdiff_t out_step) {
  const __m512i even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
  const __m512i odd = _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
  const std::size_t full = n / 16, rest = n % 16;
  const __mmask16 all = first_lanes(16), rest_lo = first_lanes(2 * rest),
                  rest_hi = first_lanes(2 * rest > 16 ? 2 * rest - 16 : 0), rest_out = first_lanes(rest);
  const auto block = [&](std::ptrdiff_t shift, std::size_t c, __mmask16 lo, __mmask16 hi) {
    __m512 sum = _mm512_setzero_ps();
    for (std::size_t i = 0; i < nrows; ++i) {
      const float* p = rows[i] + shift + c;
      const __m512 a = _mm512_maskz_loadu_ps(lo, p), b = _mm512_maskz_loadu_ps(hi, p + 16);
      sum = _mm512_add_ps(sum, _mm512_permutex2var_ps(a, even, b));
      sum = _mm512_add_ps(sum, _mm512_permutex2var_ps(a, odd, b));
    }
    return scale<kMul>(sum, d);
  };
  const std::size_t row_bytes = 2 * n * sizeof(float);
  for (std::size_t t = 0; t < count; ++t, out += out_step) {
    const std::ptrdiff_t shift = static_cast<std::ptrdiff_t>(t) * in_step;
    // the rows kPrefetchRows output rows on (past the block: the next plane's, when planes are
    // contiguous; a prefetch never faults): more misses in flight than the hardware streamer keeps
    for (std::size_t i = 0; i < nrows; ++i) {
      // (integer arithmetic: the address may lie past the input, where a pointer may not point)
      const char* ahead = reinterpret_cast<const char*>(
          reinterpret_cast<std::uintptr_t>(rows[i]) +
          static_cast<std::uintptr_t>((shift + kPrefetchRows * in_step + static_cast<std::ptrdiff_t>(c0)) *
                                      static_cast<std::ptrdiff_t>(sizeof(float))));
      for (std::size_t b = 0; b < row_bytes; b += 64) _mm_prefetch(ahead + b, _MM_HINT_T0);
    }
    for (std::size_t k = 0; k < full; ++k) _mm512_storeu_ps(out + 16 * k, block(shift, c0 + 32 * k, all, all));
    if (rest != 0) {
      _mm512_mask_storeu_ps(out + 16 * full, rest_out, block(shift, c0 + 32 * full, rest_lo, rest_hi));
    }
  }
}

template <bool kMul>
void avgpool_any(std::size_t nrows, const float* const* rows, std::size_t kw, std::size_t sw, std::size_t n,
                 std::size_t c0, __m512 d, float* out, std::size_t count, std::ptrdiff_t in_step,
                 std::ptrdiff_t out_step) {
  if (sw == 2 && kw == 2) {
    avgpool_rows_k2s2<kMul>(nrows, rows, n, c0, d, out, count, in_step, out_step);
    return;
  }
  for (std::size_t t = 0; t < count; ++t, out += out_step) {
    const std::ptrdiff_t shift = static_cast<std::ptrdiff_t>(t) * in_step;
    if (sw == 1) {
      avgpool_row<1, kMul>(nrows, rows, kw, n, c0, d, out, shift);
    } else {
      avgpool_row<2, kMul>(nrows, rows, kw, n, c0, d, out, shift);
    }
  }
}

}  // namespace

void f32_maxpool_row_avx512(std::size_t nrows, const float* const* rows, const std::int32_t* row_base,
                            std::size_t kw, std::size_t sw, std::size_t dw, std::size_t n, std::size_t c0,
                            float* out, std::int64_t* idx) {
  const Row r{nrows, rows, row_base, kw, dw};
  if (idx == nullptr && sw == 2 && dw == 1 && (kw == 2 || kw == 3) && n != 0) {
    if (kw == 2) {
      maxpool_row_s2_values<2>(r, n, c0, out);
    } else {
      maxpool_row_s2_values<3>(r, n, c0, out);
    }
  } else if (idx == nullptr) {
    if (sw == 1) {
      maxpool_row<1, false>(r, n, c0, out, idx);
    } else {
      maxpool_row<2, false>(r, n, c0, out, idx);
    }
  } else if (sw == 1) {
    maxpool_row<1, true>(r, n, c0, out, idx);
  } else {
    maxpool_row<2, true>(r, n, c0, out, idx);
  }
}

void f32_avgpool_row_avx512(std::size_t nrows, const float* const* rows, std::size_t kw, std::size_t sw,
                            std::size_t n, std::size_t c0, float divisor, float* out, std::size_t count,
                            std::ptrdiff_t in_step, std::ptrdiff_t out_step) {
  if (power_of_two(divisor)) {
    avgpool_any<true>(nrows, rows, kw, sw, n, c0, _mm512_set1_ps(1.0f / divisor), out, count, in_step, out_step);
  } else {
    avgpool_any<false>(nrows, rows, kw, sw, n, c0, _mm512_set1_ps(divisor), out, count, in_step, out_step);
  }
}

// One plane's 16 partial sums: pairs of 16-float blocks into two sums, then
// the remaining full block and the partial one into the first (the loop
// shape is fixed per call, the partial block's mask computed once), then the
// two sums added.
class PlaneLanes {
 public:
  explicit PlaneLanes(std::size_t hw)
      : pairs_(hw / 32), single_((hw % 32) / 16 != 0), part_(hw % 16 != 0), part_mask_(first_lanes(hw % 16)) {}

  __m512 operator()(const float* q) const {
    __m512 acc0 = _mm512_setzero_ps(), acc1 = _mm512_setzero_ps();
    for (std::size_t i = 0; i < pairs_; ++i, q += 32) {
      acc0 = _mm512_add_ps(acc0, _mm512_loadu_ps(q));
      acc1 = _mm512_add_ps(acc1, _mm512_loadu_ps(q + 16));
    }
    if (single_) {
      acc0 = _mm512_add_ps(acc0, _mm512_loadu_ps(q));
      q += 16;
    }
    if (part_) acc0 = _mm512_add_ps(acc0, _mm512_maskz_loadu_ps(part_mask_, q));
    return _mm512_add_ps(acc0, acc1);
  }

 private:
  std::size_t pairs_;
  bool single_, part_;
  __mmask16 part_mask_;
};

// Planes ahead of the ones being summed whose lines are prefetched: the L2
// streamer alone keeps too few lines in flight (measured at 8192 planes of 49
// floats, 1 thread: 2.8-2.9 ns per plane against 3.2 without). Only for small
// planes, where that is ~3 KB ahead: 16 large planes ahead would be lines
// evicted again before their loads.
constexpr std::size_t kGavgPrefetchPlanes = 16, kGavgPrefetchMaxHw = 256;

// Four planes at a time (their sums by hsum4, vmath/hsum4_avx512.h), the rest
// one by one: the same bits either way.
void f32_gavgpool_avx512(std::size_t planes, std::size_t hw, const float* x, float inv_hw, float* out) {
  const PlaneLanes lanes(hw);
  const __m128 inv = _mm_set1_ps(inv_hw);
  const std::size_t prefetch_bytes = hw <= kGavgPrefetchMaxHw ? 4 * hw * sizeof(float) : 0;
  std::size_t p = 0;
  for (; p + 4 <= planes; p += 4, x += 4 * hw) {
    // (integer arithmetic: the address may lie past the input, where a pointer may not point)
    const std::uintptr_t ahead = reinterpret_cast<std::uintptr_t>(x) + kGavgPrefetchPlanes * hw * sizeof(float);
    for (std::size_t b = 0; b < prefetch_bytes; b += 64) {
      _mm_prefetch(reinterpret_cast<const char*>(ahead + b), _MM_HINT_T0);
    }
    const __m512 v0 = lanes(x), v1 = lanes(x + hw), v2 = lanes(x + 2 * hw), v3 = lanes(x + 3 * hw);
    _mm_storeu_ps(out + p, _mm_mul_ps(hsum4(v0, v1, v2, v3), inv));
  }
  for (; p < planes; ++p, x += hw) out[p] = _mm512_reduce_add_ps(lanes(x)) * inv_hw;
}

// The scatter stays scalar, in k order (adjacent windows share input
// elements, so a vector scatter would need conflict handling for little);
// the zero fill and the streamed copy move whole 64-byte lines.
void f32_maxpool_backward_avx512(const float* g, const std::int64_t* idx, std::size_t n_out, std::size_t n_in,
                                 float* dst, float* out) {
  std::size_t i = 0;
  for (; i + 16 <= n_in; i += 16) _mm512_storeu_ps(dst + i, _mm512_setzero_ps());
  if (i < n_in) _mm512_mask_storeu_ps(dst + i, first_lanes(n_in - i), _mm512_setzero_ps());
  maxpool_scatter(g, idx, n_out, n_in, dst);
  if (out == nullptr) return;
  i = 0;
  const std::size_t head = ((64 - (reinterpret_cast<std::uintptr_t>(out) & 63)) & 63) / sizeof(float);
  if ((reinterpret_cast<std::uintptr_t>(out) & 3) != 0 || head >= n_in) {
    for (; i < n_in; ++i) out[i] = dst[i];
    return;
  }
  if (head != 0) {
    _mm512_mask_storeu_ps(out, first_lanes(head), _mm512_maskz_loadu_ps(first_lanes(head), dst));
    i = head;
  }
  for (; i + 16 <= n_in; i += 16) _mm512_stream_ps(out + i, _mm512_loadu_ps(dst + i));
  if (i < n_in) _mm512_mask_storeu_ps(out + i, first_lanes(n_in - i), _mm512_maskz_loadu_ps(first_lanes(n_in - i), dst + i));
}

}  // namespace nnkern::pool
