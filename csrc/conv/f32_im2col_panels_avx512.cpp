// im2col into packed A panels (im2col_panels.h), AVX-512. The columns a tap
// row reads depend only on its kernel column (r % kw), so the runs are cut
// once per call into pieces of up to 16 pixels per kernel column, each with
// its load and store masks; then every (tap row, piece) is one masked store
// of one masked load (stride 1), two masked loads and a permute (stride 2),
// or a masked gather. Masked-off lanes are not read (and read as zero), so
// the loads may start before or end after the input row.
#include <immintrin.h>

#include <cstdint>
#include <vector>

#include "conv/im2col_panels.h"

namespace nnkern::conv {
namespace {

inline __mmask16 lanes(std::ptrdiff_t n) {
  return n >= 16 ? __mmask16(0xffff) : n <= 0 ? __mmask16(0) : __mmask16((1u << n) - 1u);
}
// lanes [lo, hi) of 16
inline __mmask16 range(std::ptrdiff_t lo, std::ptrdiff_t hi) {
  return static_cast<__mmask16>(lanes(hi) & static_cast<__mmask16>(~lanes(lo)));
}

// Address arithmetic that may leave the array (the masked-off lanes are never read).
inline const float* offset(const float* p, std::ptrdiff_t n) {
  return reinterpret_cast<const float*>(reinterpret_cast<std::uintptr_t>(p) +
                                        static_cast<std::uintptr_t>(n * static_cast<std::ptrdiff_t>(sizeof(float))));
}

// Up to 16 pixels of a run for one kernel column: d[i] = row[col + i * sw]
// for the lanes of `lo` / `hi` (stride 2: element lanes of the two 16-float
// loads; otherwise lanes of one load or gather), zero elsewhere, i < store.
struct Piece {
  std::size_t dst;         // from the tap row's start in the slice: tile * tile_stride + at + i0
  std::size_t image_off;   // elements
  std::ptrdiff_t iy0;      // oy * sh
  std::ptrdiff_t col;      // input column of lane 0 (may lie outside the row)
  __mmask16 lo, hi, store;
};

template <int SW>
void im2col(const Im2colPanels& j) {
  const auto sw = static_cast<std::ptrdiff_t>(j.sw);
  // pieces per kernel column (slice-independent except for the tile stride: built per slice depth)
  std::vector<Piece> pieces;
  std::vector<std::size_t> first(j.kw + 1);
  const auto build = [&](std::size_t tile_stride) {
    pieces.clear();
    for (std::size_t kx = 0; kx < j.kw; ++kx) {
      first[kx] = pieces.size();
      const Im2colTap& tap = j.taps[kx];
      for (std::size_t q = 0; q < j.n_runs; ++q) {
        const Im2colRun& run = j.runs[q];
        const std::ptrdiff_t len = run.ox1 - run.ox0;
        // valid lanes [a, b) of the run
        const std::ptrdiff_t a = (tap.lo_x > run.ox0 ? tap.lo_x : run.ox0) - run.ox0;
        const std::ptrdiff_t b = (tap.hi_x < run.ox1 ? tap.hi_x : run.ox1) - run.ox0;
        for (std::ptrdiff_t i0 = 0; i0 < len; i0 += 16) {
          Piece p;
          p.dst = run.tile * tile_stride + run.at + static_cast<std::size_t>(i0);
          p.image_off = run.image_off;
          p.iy0 = run.iy0;
          p.col = (run.ox0 + i0) * sw + tap.off_x;
          const std::ptrdiff_t va = a - i0 > 0 ? a - i0 : 0, vb = b - i0 < 16 ? b - i0 : 16;
          p.store = lanes(len - i0);
          if (SW == 2) {
            // lane i is element 2i of the 32 from col: read [2 va, 2 vb - 1)
            p.lo = vb > va ? range(2 * va, 2 * vb - 1) : __mmask16(0);
            p.hi = vb > va ? range(2 * va - 16, 2 * vb - 17) : __mmask16(0);
          } else {
            p.lo = vb > va ? range(va, vb) : __mmask16(0);
            p.hi = 0;
          }
          pieces.push_back(p);
        }
      }
    }
    first[j.kw] = pieces.size();
  };
  const __m512i even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
  const __m512i idx = _mm512_mullo_epi32(_mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
                                         _mm512_set1_epi32(static_cast<int>(j.sw)));
  const auto h = static_cast<std::ptrdiff_t>(j.h);
  std::size_t built_for = 0;
  for (std::size_t pc = 0; pc < j.k; pc += j.kc) {
    const std::size_t kb = j.kc < j.k - pc ? j.kc : j.k - pc;
    float* const slice = j.dst + pc * j.tiles * j.mr + pc / j.kc * j.tiles * j.tile_pad;
    const std::size_t tile_stride = j.mr * kb + j.tile_pad;
    if (tile_stride != built_for) {
      build(tile_stride);
      built_for = tile_stride;
    }
    for (std::size_t r = pc; r < pc + kb; ++r) {
      const Im2colTap& tap = j.taps[r];
      float* const drow = slice + (r - pc) * j.mr;
      if (j.ahead != 0 && r % j.taps_per_channel == 0 && r / j.taps_per_channel + j.ahead < j.channels) {
        // a later channel's planes: each is read tap by tap in short runs
        for (std::size_t n = j.image0; n < j.image0 + j.images; ++n) {
          const char* p = reinterpret_cast<const char*>(j.x + n * j.image_stride + tap.chan_off + j.ahead * j.plane);
          for (std::size_t byte = 0; byte < j.plane * sizeof(float); byte += 64) _mm_prefetch(p + byte, _MM_HINT_T0);
        }
      }
      const std::size_t kx = r % j.kw;
      const Piece* const end = pieces.data() + first[kx + 1];
      for (const Piece* p = pieces.data() + first[kx]; p != end; ++p) {
        const std::ptrdiff_t iy = p->iy0 + tap.row_off;
        __m512 v;
        if (iy < 0 || iy >= h) {
          v = _mm512_setzero_ps();
        } else {
          const float* s = offset(j.x + p->image_off + tap.chan_off + static_cast<std::size_t>(iy) * j.w, p->col);
          if constexpr (SW == 1) {
            v = _mm512_maskz_loadu_ps(p->lo, s);
          } else if constexpr (SW == 2) {
            v = _mm512_permutex2var_ps(_mm512_maskz_loadu_ps(p->lo, s), even,
                                       _mm512_maskz_loadu_ps(p->hi, offset(s, 16)));
          } else {
            v = _mm512_mask_i32gather_ps(_mm512_setzero_ps(), p->lo, idx, s, 4);
          }
        }
        _mm512_mask_storeu_ps(drow + p->dst, p->store, v);
      }
    }
  }
}

}  // namespace

void f32_im2col_panels_avx512(const Im2colPanels& job) {
  if (job.sw == 1) return im2col<1>(job);
  if (job.sw == 2) return im2col<2>(job);
  im2col<0>(job);
}

}  // namespace nnkern::conv
