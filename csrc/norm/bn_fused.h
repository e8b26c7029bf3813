// The four fused forms of the batch-norm affine kernel (residual add or not,
// ReLU or not) as compile-time flags, chosen once per plane. A template
// header for the ISA files: no code of its own, helpers in an anonymous
// namespace (see CMakeLists.txt).
#pragma once

namespace nnkern::norm {
namespace {

template <bool B>
struct Flag {
  static constexpr bool value = B;
};

// fn(Flag<residual>{}, Flag<relu>{}): one instantiation of fn's body per form.
template <class Fn>
inline void with_fused_form(bool residual, bool relu, const Fn& fn) {
  if (residual) {
    relu ? fn(Flag<true>{}, Flag<true>{}) : fn(Flag<true>{}, Flag<false>{});
  } else {
    relu ? fn(Flag<false>{}, Flag<true>{}) : fn(Flag<false>{}, Flag<false>{});
  }
}

}  // namespace
}  // namespace nnkern::norm
