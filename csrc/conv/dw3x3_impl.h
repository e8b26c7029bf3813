// The depthwise 3x3 stride-1 plane kernels of dw3x3.h, written once over a
// vector "family" V and included by each family's source file
// (f32_dw3x3_{scalar,avx2,avx512}.cpp), which defines V in its anonymous
// namespace: every function here is a template of V, so each instantiation
// has internal linkage and the AVX-512 code cannot leak into another family.
//
// V provides: T, vec, mask, L (lanes), kFwdRows / kWgradRows (output rows per
// pass), zero, set1, loadu, maskz (masked load, zero elsewhere; masked-off
// lanes are never read), fma(a, b, c) = a*b + c, add, relu (NaN passes, as
// torch.relu), storeu, mask_store, lanes(lo, hi) (the lanes l with
// lo <= l < hi), mand (mask and), hsum (lanes summed in a fixed order),
// fma_mask (FMA in the lanes of a mask, the accumulator elsewhere),
// kReluAfter (ReLU in a separate pass over the plane), kShift; and when
// kShift: first_lane, last_lane (masks), shift_in_prev, shift_in_next
// (one-lane shifts across two vectors), keep (zero lanes outside a mask).
//
// Layout of the work: the output plane is cut into groups of R rows and the
// rows into blocks of L columns. A block of R output rows reads R + 2 input
// rows; the nine weights stay broadcast in registers. Input rows outside the
// plane (top/bottom padding) are skipped, which is adding zero. Each input
// row is, per block:
//  - kShift (AVX-512): loaded once at the centre tap, the -1 / +1 taps shifted
//    in from the neighbouring blocks' vectors (fwd_group_shifted);
//  - otherwise: loaded three times, at column offsets -pl, 1 - pl, 2 - pl,
//    masked only in the blocks that touch the row's ends (fwd_block).
// Both give the same products summed in the same order.
#pragma once

#include <cstddef>

#include "conv/dw3x3.h"

namespace nnkern::conv {

template <class V>
struct Dw3x3Impl {
  using T = typename V::T;
  using vec = typename V::vec;
  using mask = typename V::mask;
  static constexpr std::ptrdiff_t L = V::L;
  using idx = std::ptrdiff_t;

  // Masks of one block of L output columns starting at x0.
  struct Block {
    mask om;      // lanes that are output columns
    mask cm[3];   // lanes whose tap j reads inside the input row (and are output columns)
  };

  static Block block(const Dw3x3Geo& g, idx x0) {
    Block b;
    const idx iw = static_cast<idx>(g.iw), ow = static_cast<idx>(g.ow), pl = g.pl;
    b.om = V::lanes(0, ow - x0);
    for (idx j = 0; j < 3; ++j) b.cm[j] = V::mand(b.om, V::lanes(pl - j - x0, iw + pl - j - x0));
    return b;
  }

  // The column blocks of a plane: blocks [full_lo, full_hi) have every lane an
  // output column and all three taps inside the input row (plain loads and
  // stores); the others (usually one at each end) take masks, computed once
  // per plane when there are at most kCached of them.
  struct Cols {
    static constexpr int kCached = 8;
    idx nb, full_lo, full_hi;
    bool cached;
    // blocks [0, full_lo) then [full_hi, nb); zeroed: edge[0] is also the (unread) argument of full blocks
    Block edge[kCached] = {};
  };

  static void columns(const Dw3x3Geo& g, Cols& c) {
    const idx iw = static_cast<idx>(g.iw), ow = static_cast<idx>(g.ow), pl = g.pl;
    c.nb = (ow + L - 1) / L;
    // full: x0 >= pl and x0 + L <= min(iw + pl - 2, ow)
    c.full_lo = pl <= 0 ? 0 : (pl + L - 1) / L;
    if (c.full_lo > c.nb) c.full_lo = c.nb;
    const idx e = iw + pl - 2 < ow ? iw + pl - 2 : ow;
    c.full_hi = e < 0 ? 0 : e / L;
    if (c.full_hi < c.full_lo) c.full_hi = c.full_lo;
    if (c.full_hi > c.nb) c.full_hi = c.nb;
    c.cached = c.full_lo + (c.nb - c.full_hi) <= Cols::kCached;
    if (!c.cached) return;
    int k = 0;
    for (idx bi = 0; bi < c.full_lo; ++bi) c.edge[k++] = block(g, bi * L);
    for (idx bi = c.full_hi; bi < c.nb; ++bi) c.edge[k++] = block(g, bi * L);
  }

  // Calls f(x0, masks or nullptr when the block is full) for every block, left to right.
  template <class F>
  static void for_blocks(const Dw3x3Geo& g, const Cols& c, F&& f) {
    Block tmp{};
    int k = 0;
    for (idx bi = 0; bi < c.full_lo; ++bi, ++k) {
      if (!c.cached) tmp = block(g, bi * L);
      f(bi * L, c.cached ? &c.edge[k] : &tmp);
    }
    for (idx bi = c.full_lo; bi < c.full_hi; ++bi) f(bi * L, static_cast<const Block*>(nullptr));
    for (idx bi = c.full_hi; bi < c.nb; ++bi, ++k) {
      if (!c.cached) tmp = block(g, bi * L);
      f(bi * L, c.cached ? &c.edge[k] : &tmp);
    }
  }

  // Input rows of the group starting at output row oy0: row k (k < R + 2) is
  // input row oy0 - pt + k; rows[k] points at its column -pl (only read
  // through masks or inside the row), ok[k] says whether it is in the plane.
  template <int R>
  static void group_rows(const Dw3x3Geo& g, const T* in, idx oy0, const T** rows, bool* ok) {
    for (int k = 0; k < R + 2; ++k) {
      const idx iy = oy0 - g.pt + k;
      ok[k] = iy >= 0 && iy < static_cast<idx>(g.ih);
      rows[k] = in + (ok[k] ? iy * static_cast<idx>(g.iw) : 0) - g.pl;
    }
  }

  template <bool M>
  static vec load(const T* p, mask m) {
    if constexpr (M) {
      return V::maskz(m, p);
    } else {
      return V::loadu(p);
    }
  }

  // ---- forward / grad_input
  //
  // Two treatments of the taps that fall outside the input plane, matching
  // the reference (im2col / col2im) also for inf / NaN weights:
  //  - Mult (the forward): they read zero and are multiplied (w * 0, NaN for
  //    an infinite weight, as a padded input);
  //  - !Mult (grad_input): they are left out (col2im only sums real terms):
  //    rows skipped, lanes by masked FMAs in the blocks at the row's ends.

  template <bool Masked>
  static vec fmadd(vec a, vec b, vec c, mask m) {
    if constexpr (Masked) {
      return V::fma_mask(m, a, b, c);
    } else {
      return V::fma(a, b, c);
    }
  }

  // acc[r] += taps of kernel row k - r on the three tap vectors of input row k.
  template <int R, bool MaskFma>
  static void row_taps(int k, vec v0, vec v1, vec v2, const vec* w, const mask* tm, vec* acc) {
    _Pragma("GCC unroll 8") for (int r = 0; r < R; ++r) {
      const int i = k - r;
      if (i < 0 || i > 2) continue;
      acc[r] = fmadd<MaskFma>(w[3 * i], v0, acc[r], tm[0]);
      acc[r] = fmadd<MaskFma>(w[3 * i + 1], v1, acc[r], tm[1]);
      acc[r] = fmadd<MaskFma>(w[3 * i + 2], v2, acc[r], tm[2]);
    }
  }

  template <int R, bool M>
  static void fwd_store(vec* acc, const T* res, bool relu, T* out, idx ow, idx x0, mask om) {
    _Pragma("GCC unroll 8") for (int r = 0; r < R; ++r) {
      vec v = acc[r];
      if (res != nullptr) v = V::add(v, load<M>(res + r * ow + x0, om));
      if (relu) v = V::relu(v);
      if constexpr (M) {
        V::mask_store(out + r * ow + x0, om, v);
      } else {
        V::storeu(out + r * ow + x0, v);
      }
    }
  }

  template <int R, bool AllRows, bool Mult, bool M>
  static void fwd_block(const T* const* rows, const bool* ok, idx x0, const Block& b, const vec* w, vec init,
                        const T* res, bool relu, T* out, idx ow) {
    constexpr bool kMaskFma = M && !Mult;
    vec acc[R];
    _Pragma("GCC unroll 8") for (int r = 0; r < R; ++r) acc[r] = init;
    _Pragma("GCC unroll 8") for (int k = 0; k < R + 2; ++k) {
      vec v0 = V::zero(), v1 = V::zero(), v2 = V::zero();
      if (AllRows || ok[k]) {
        const T* p = rows[k] + x0;
        v0 = load<M>(p, b.cm[0]);
        v1 = load<M>(p + 1, b.cm[1]);
        v2 = load<M>(p + 2, b.cm[2]);
      } else if (!Mult) {
        continue;
      }
      row_taps<R, kMaskFma>(k, v0, v1, v2, w, b.cm, acc);
    }
    fwd_store<R, M>(acc, res, relu, out, ow, x0, b.om);
  }

  template <int R, bool AllRows, bool Mult>
  static void fwd_group(const Dw3x3Geo& g, const Cols& c, const T* in, idx oy0, const vec* w, vec init,
                        const T* res, bool relu, T* out) {
    const T* rows[R + 2];
    bool ok[R + 2];
    group_rows<R>(g, in, oy0, rows, ok);
    const idx ow = static_cast<idx>(g.ow);
    const T* res_g = res != nullptr ? res + oy0 * ow : nullptr;
    T* out_g = out + oy0 * ow;
    if constexpr (V::kShift) {
      fwd_group_shifted<R, AllRows, Mult>(g, rows, ok, w, init, res_g, relu, out_g);
      return;
    }
    for_blocks(g, c, [&](idx x0, const Block* b) {
      if (b == nullptr) {
        fwd_block<R, AllRows, Mult, false>(rows, ok, x0, c.edge[0], w, init, res_g, relu, out_g, ow);
      } else {
        fwd_block<R, AllRows, Mult, true>(rows, ok, x0, *b, w, init, res_g, relu, out_g, ow);
      }
    });
  }

  // Families with V::kShift (a cheap lane shift): each input row is loaded
  // once per block, at the centre tap (columns x0 - pl + 1 + lane); its -1 / +1
  // taps are that vector with the last lane of the previous block's / the
  // first lane of the next block's vector shifted in. Unaligned loads split
  // cache lines: one load per row and block instead of three. Loads and stores
  // are masked to the plane (masks of all ones inside it); the products and
  // sums are those of fwd_block, so the bits are the same.
  //
  // centre_mask(x0): the lanes of the centre vector of block x0 inside the row.
  static mask centre_mask(const Dw3x3Geo& g, idx x0) {
    const idx c0 = x0 - g.pl + 1;
    return V::lanes(-c0, static_cast<idx>(g.iw) - c0);
  }

  template <int R, bool AllRows, bool Mult, bool MaskFma>
  static void fwd_shifted_block(const Dw3x3Geo& g, const T* const* rows, const bool* ok, idx x0, vec* prev,
                                vec* cur, const vec* w, vec init, const T* res, bool relu, T* out, idx ow) {
    const mask mn = centre_mask(g, x0 + L), om = V::lanes(0, ow - x0);
    mask tm[3];
    if constexpr (MaskFma) {
      for (int j = 0; j < 3; ++j) tm[j] = centre_mask(g, x0 + j - 1);
    }
    vec acc[R];
    _Pragma("GCC unroll 8") for (int r = 0; r < R; ++r) acc[r] = init;
    _Pragma("GCC unroll 8") for (int k = 0; k < R + 2; ++k) {
      vec v0 = V::zero(), v1 = V::zero(), v2 = V::zero();
      if (AllRows || ok[k]) {
        const vec next = V::maskz(mn, rows[k] + 1 + x0 + L);
        v0 = V::shift_in_prev(cur[k], prev[k]);
        v1 = cur[k];
        v2 = V::shift_in_next(next, cur[k]);
        prev[k] = v1;
        cur[k] = next;
      } else if (!Mult) {
        continue;
      }
      row_taps<R, MaskFma>(k, v0, v1, v2, w, tm, acc);
    }
    fwd_store<R, true>(acc, res, relu, out, ow, x0, om);
  }

  // The first two vectors (the one ending just before the row and the one
  // starting at column 0) of each of the R + 2 input rows of a group, for the
  // shifted-window loops; rows outside the plane (ok[k] false) stay unread.
  template <int R, bool AllRows>
  static void preload_rows(const Dw3x3Geo& g, const T* const* rows, const bool* ok, vec* prev, vec* cur) {
    const mask mp = V::mand(centre_mask(g, -L), V::last_lane()), mc = centre_mask(g, 0);
    _Pragma("GCC unroll 8") for (int k = 0; k < R + 2; ++k) {
      if (!AllRows && !ok[k]) continue;
      prev[k] = V::maskz(mp, rows[k] + 1 - L);
      cur[k] = V::maskz(mc, rows[k] + 1);
    }
  }

  template <int R, bool AllRows, bool Mult>
  static void fwd_group_shifted(const Dw3x3Geo& g, const T* const* rows, const bool* ok, const vec* w, vec init,
                                const T* res, bool relu, T* out) {
    const idx ow = static_cast<idx>(g.ow), iw = static_cast<idx>(g.iw);
    vec prev[R + 2] = {}, cur[R + 2] = {};  // rows outside the plane stay unread
    preload_rows<R, AllRows>(g, rows, ok, prev, cur);
    for (idx x0 = 0; x0 < ow; x0 += L) {
      // grad_input leaves out the lanes whose taps fall outside the row (a block at either end)
      if (!Mult && !(x0 - g.pl >= 0 && x0 - g.pl + 2 + L <= iw)) {
        fwd_shifted_block<R, AllRows, Mult, true>(g, rows, ok, x0, prev, cur, w, init, res, relu, out, ow);
      } else {
        fwd_shifted_block<R, AllRows, Mult, false>(g, rows, ok, x0, prev, cur, w, init, res, relu, out, ow);
      }
    }
  }

  // The last rows of the plane (fewer than R), one group of n rows.
  template <int R, bool Mult>
  static void fwd_tail(const Dw3x3Geo& g, const Cols& c, const T* in, idx oy0, idx n, const vec* w, vec init,
                       const T* res, bool relu, T* out) {
    if constexpr (R > 1) {
      if (n == R - 1) {
        fwd_group<R - 1, false, Mult>(g, c, in, oy0, w, init, res, relu, out);
      } else {
        fwd_tail<R - 1, Mult>(g, c, in, oy0, n, w, init, res, relu, out);
      }
    }
  }

  template <bool Mult>
  static void plane_t(const Dw3x3Geo& g, const T* in, const T* w9, T init, const T* res, bool relu, T* out) {
    constexpr int R = V::kFwdRows;
    vec w[9];
    for (int t = 0; t < 9; ++t) w[t] = V::set1(w9[t]);
    const vec vinit = V::set1(init);
    Cols c;
    if constexpr (!V::kShift) columns(g, c);  // the shifted path masks every block itself
    const idx oh = static_cast<idx>(g.oh), ih = static_cast<idx>(g.ih);
    // V::kReluAfter (one lane per vector): a data-dependent select per element
    // compiles to a mispredicted branch; a separate loop over the plane vectorizes
    const bool relu_here = relu && !V::kReluAfter;
    idx oy = 0;
    for (; oy + R <= oh; oy += R) {
      if (oy - g.pt >= 0 && oy - g.pt + R + 1 < ih) {
        fwd_group<R, true, Mult>(g, c, in, oy, w, vinit, res, relu_here, out);
      } else {
        fwd_group<R, false, Mult>(g, c, in, oy, w, vinit, res, relu_here, out);
      }
    }
    if (oy < oh) fwd_tail<R, Mult>(g, c, in, oy, oh - oy, w, vinit, res, relu_here, out);
    if constexpr (V::kReluAfter) {
      const idx n = relu ? oh * static_cast<idx>(g.ow) : 0;
      for (idx i = 0; i < n; ++i) out[i] = V::relu(out[i]);
    }
  }

  static void plane(const Dw3x3Geo& g, const T* in, const T* w9, T init, const T* res, bool relu, bool outside_zero,
                    T* out) {
    if (outside_zero) {
      plane_t<true>(g, in, w9, init, res, relu, out);
    } else {
      plane_t<false>(g, in, w9, init, res, relu, out);
    }
  }

  // ---- weight (and bias) gradient

  // Input row k of a group of R output rows holds the three shifted column
  // vectors v0..v2: it meets output row r at filter row i = k - r.
  template <int R>
  __attribute__((always_inline)) static void accumulate_taps(int k, const vec* gv, vec v0, vec v1, vec v2,
                                                             vec* acc) {
    _Pragma("GCC unroll 8") for (int r = 0; r < R; ++r) {
      const int i = k - r;
      if (i < 0 || i > 2) continue;
      acc[3 * i] = V::fma(gv[r], v0, acc[3 * i]);
      acc[3 * i + 1] = V::fma(gv[r], v1, acc[3 * i + 1]);
      acc[3 * i + 2] = V::fma(gv[r], v2, acc[3 * i + 2]);
    }
  }

  template <int R, bool AllRows, bool Taps, bool M>
  static void wgrad_block(const T* const* rows, const bool* ok, const T* grad, idx x0, const Block& b, idx ow,
                          vec* acc, vec& accb) {
    vec gv[R];
    _Pragma("GCC unroll 8") for (int r = 0; r < R; ++r) gv[r] = load<M>(grad + r * ow + x0, b.om);
    if constexpr (Taps) {
      _Pragma("GCC unroll 8") for (int k = 0; k < R + 2; ++k) {
        // rows outside the plane: zeros, multiplied (grad * 0: NaN for an infinite grad, as im2col)
        vec v0 = V::zero(), v1 = V::zero(), v2 = V::zero();
        if (AllRows || ok[k]) {
          const T* p = rows[k] + x0;
          v0 = load<M>(p, b.cm[0]);
          v1 = load<M>(p + 1, b.cm[1]);
          v2 = load<M>(p + 2, b.cm[2]);
        }
        accumulate_taps<R>(k, gv, v0, v1, v2, acc);
      }
    }
    _Pragma("GCC unroll 8") for (int r = 0; r < R; ++r) accb = V::add(accb, gv[r]);
  }

  template <int R, bool AllRows, bool Taps>
  static void wgrad_group(const Dw3x3Geo& g, const Cols& c, const T* x, const T* grad, idx oy0, vec* acc,
                          vec& accb) {
    const T* rows[R + 2];
    bool ok[R + 2];
    group_rows<R>(g, x, oy0, rows, ok);
    const idx ow = static_cast<idx>(g.ow);
    const T* grad_g = grad + oy0 * ow;
    // local copies the compiler keeps in registers (vec may alias anything)
    vec a[9];
    vec ab = accb;
    for (int t = 0; t < 9; ++t) a[t] = acc[t];
    if constexpr (V::kShift) {
      wgrad_group_shifted<R, AllRows, Taps>(g, rows, ok, grad_g, a, ab);
    } else {
      for_blocks(g, c, [&](idx x0, const Block* b) {
        if (b == nullptr) {
          wgrad_block<R, AllRows, Taps, false>(rows, ok, grad_g, x0, c.edge[0], ow, a, ab);
        } else {
          wgrad_block<R, AllRows, Taps, true>(rows, ok, grad_g, x0, *b, ow, a, ab);
        }
      });
    }
    for (int t = 0; t < 9; ++t) acc[t] = a[t];
    accb = ab;
  }

  // wgrad_block with each x row loaded once per block (fwd_group_shifted's
  // scheme); in the row's last block the x lanes past the output row are
  // zeroed, as wgrad_block's masks do (x * 0 stays 0 even if x is inf).
  template <int R, bool AllRows, bool Taps>
  static void wgrad_group_shifted(const Dw3x3Geo& g, const T* const* rows, const bool* ok, const T* grad, vec* acc,
                                  vec& accb) {
    const idx ow = static_cast<idx>(g.ow);
    vec prev[R + 2] = {}, cur[R + 2] = {};  // rows outside the plane stay unread
    if constexpr (Taps) preload_rows<R, AllRows>(g, rows, ok, prev, cur);
    for (idx x0 = 0; x0 < ow; x0 += L) {
      const mask om = V::lanes(0, ow - x0);
      const bool tail = x0 + L > ow;
      vec gv[R];
      _Pragma("GCC unroll 8") for (int r = 0; r < R; ++r) gv[r] = V::maskz(om, grad + r * ow + x0);
      if constexpr (Taps) {
        const mask mn = centre_mask(g, x0 + L);
        _Pragma("GCC unroll 8") for (int k = 0; k < R + 2; ++k) {
          // rows outside the plane: zeros, multiplied (as wgrad_block)
          vec v0 = V::zero(), v1 = V::zero(), v2 = V::zero();
          if (AllRows || ok[k]) {
            const vec next = V::maskz(mn, rows[k] + 1 + x0 + L);
            v0 = V::shift_in_prev(cur[k], prev[k]);
            v1 = cur[k];
            v2 = V::shift_in_next(next, cur[k]);
            prev[k] = cur[k];
            cur[k] = next;
          }
          if (tail) {
            v0 = V::keep(om, v0);
            v1 = V::keep(om, v1);
            v2 = V::keep(om, v2);
          }
          accumulate_taps<R>(k, gv, v0, v1, v2, acc);
        }
      }
      _Pragma("GCC unroll 8") for (int r = 0; r < R; ++r) accb = V::add(accb, gv[r]);
    }
  }

  template <int R, bool Taps>
  static void wgrad_tail(const Dw3x3Geo& g, const Cols& c, const T* x, const T* grad, idx oy0, idx n, vec* acc,
                         vec& accb) {
    if constexpr (R > 1) {
      if (n == R - 1) {
        wgrad_group<R - 1, false, Taps>(g, c, x, grad, oy0, acc, accb);
      } else {
        wgrad_tail<R - 1, Taps>(g, c, x, grad, oy0, n, acc, accb);
      }
    }
  }

  template <bool Taps>
  static void wgrad_plane_t(const Dw3x3Geo& g, const T* x, const T* grad, T* sums) {
    constexpr int R = V::kWgradRows;
    vec acc[9];
    for (auto& a : acc) a = V::zero();
    vec accb = V::zero();
    Cols c;
    if constexpr (!V::kShift) columns(g, c);  // the shifted path masks every block itself
    const idx oh = static_cast<idx>(g.oh), ih = static_cast<idx>(g.ih);
    idx oy = 0;
    for (; oy + R <= oh; oy += R) {
      if (oy - g.pt >= 0 && oy - g.pt + R + 1 < ih) {
        wgrad_group<R, true, Taps>(g, c, x, grad, oy, acc, accb);
      } else {
        wgrad_group<R, false, Taps>(g, c, x, grad, oy, acc, accb);
      }
    }
    if (oy < oh) wgrad_tail<R, Taps>(g, c, x, grad, oy, oh - oy, acc, accb);
    for (int t = 0; t < 9; ++t) sums[t] = Taps ? V::hsum(acc[t]) : T(0);
    sums[9] = V::hsum(accb);
  }

  static void wgrad_plane(const Dw3x3Geo& g, const T* x, const T* grad, bool taps, T* sums) {
    if (taps) {
      wgrad_plane_t<true>(g, x, grad, sums);
    } else {
      wgrad_plane_t<false>(g, x, grad, sums);
    }
  }
};

}  // namespace nnkern::conv
