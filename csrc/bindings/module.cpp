// nnkern._cpu: the native CPU backend (see python/nnkern/backends/cpu.py).
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <mutex>
#include <new>
#include <string>
#include <utility>
#include <vector>

#include "bindings/arrays.h"
#include "bindings/families.h"
#include "core/cpu_features.h"
#include "core/dispatch.h"
#include "core/errors.h"
#include "core/thread_pool.h"
#include "core/weight_cache.h"
#include "core/workspace.h"
#include "nnkern_build_info.h"
#include "probe/probe.h"
#include "vmath/relu_op.h"

namespace py = pybind11;
using namespace nnkern;
using bindings::c_contiguous;
using bindings::empty_c;
using bindings::float_dtype;
using bindings::run_native;
using bindings::view_of;

namespace {

py::array relu(const py::array& x_in) {
  const Dtype dtype = float_dtype(x_in, "relu", "x");
  const py::array x = c_contiguous(x_in);
  py::array y = empty_c(dtype, x);
  const ArrayView xv = view_of(x, dtype), yv = view_of(y, dtype);
  run_native([&] { ops::relu(xv, yv); });
  return y;
}

py::array relu_backward(const py::array& grad_in, const py::array& out_in) {
  const Dtype dtype = float_dtype(grad_in, "relu_backward", "grad_output");
  if (float_dtype(out_in, "relu_backward", "output") != dtype) {
    throw type_error("relu_backward: grad_output and output must have one dtype, got " +
                     py::str(grad_in.dtype()).cast<std::string>() + " and " +
                     py::str(out_in.dtype()).cast<std::string>());
  }
  const py::array grad = c_contiguous(grad_in), out = c_contiguous(out_in);
  if (!std::equal(grad.shape(), grad.shape() + grad.ndim(), out.shape(), out.shape() + out.ndim())) {
    throw value_error("relu_backward: grad_output and output must have one shape, got " +
                      py::str(py::tuple(py::cast(std::vector<py::ssize_t>(grad.shape(), grad.shape() + grad.ndim()))))
                          .cast<std::string>() +
                      " and " +
                      py::str(py::tuple(py::cast(std::vector<py::ssize_t>(out.shape(), out.shape() + out.ndim()))))
                          .cast<std::string>());
  }
  py::array grad_input = empty_c(dtype, grad);
  const ArrayView gv = view_of(grad, dtype), ov = view_of(out, dtype), giv = view_of(grad_input, dtype);
  run_native([&] { ops::relu_backward(gv, ov, giv); });
  return grad_input;
}

std::vector<std::string> supported_isa_names() {
  std::vector<std::string> names;
  for (Isa isa : supported_isas()) names.emplace_back(isa_name(isa));
  return names;
}

py::dict build_info() {
  py::dict info;
  info["version"] = NNKERN_VERSION;
  info["build_type"] = NNKERN_BUILD_TYPE;
  info["compiler"] = NNKERN_COMPILER;
  info["cxx_flags"] = NNKERN_CXX_FLAGS;
  py::dict isa_flags;
  isa_flags["scalar"] = NNKERN_SCALAR_FLAGS;
  if (NNKERN_X86_KERNELS) {
    isa_flags["avx2"] = NNKERN_AVX2_FLAGS;
    isa_flags["avx512"] = NNKERN_AVX512_FLAGS;
  }
  info["isa_flags"] = isa_flags;
  info["sanitize"] = static_cast<bool>(NNKERN_SANITIZE_ENABLED);
  info["cuda_module"] = static_cast<bool>(NNKERN_CUDA_ENABLED);
  return info;
}

// ---- hooks for tests/test_native_core.py --------------------------------

void test_raise(const std::string& kind) {
  if (kind == "value") throw value_error("_test_raise: a value error from C++");
  if (kind == "type") throw type_error("_test_raise: a type error from C++");
  if (kind == "memory") throw std::bad_alloc();
  throw value_error("_test_raise: kind must be 'value', 'type' or 'memory', got '" + kind + "'");
}

std::vector<std::pair<std::size_t, std::size_t>> test_parallel_ranges(std::size_t n_tasks) {
  std::vector<std::pair<std::size_t, std::size_t>> ranges;
  std::mutex mutex;
  run_native([&] {
    parallel_for(n_tasks, [&](std::size_t begin, std::size_t end) {
      std::lock_guard<std::mutex> lock(mutex);
      ranges.emplace_back(begin, end);
    });
  });
  std::sort(ranges.begin(), ranges.end());
  return ranges;
}

// True when every chunk, on the caller and on the pool threads, ran with FTZ and DAZ.
bool test_ftz_inside() {
  std::atomic<bool> all{true};
  run_native([&] {
    parallel_for(static_cast<std::size_t>(get_num_threads()), [&](std::size_t, std::size_t) {
      if (!flushing_denormals()) all = false;
    });
  });
  return all;
}

}  // namespace

PYBIND11_MODULE(_cpu, m) {
  m.doc() = "nnkern native CPU kernels (use nnkern.backends.cpu)";

  py::register_exception_translator([](std::exception_ptr p) {
    try {
      if (p) std::rethrow_exception(p);
    } catch (const type_error& e) {
      py::set_error(PyExc_TypeError, e.what());
    }
  });

  m.def("select_isa", &select_isa, py::arg("name"),
        "Choose the kernel family: '' for the best supported, or avx512/avx2/scalar (ValueError if unknown or "
        "unsupported). Called once by nnkern.backends.cpu at import with $NNKERN_ISA.");
  m.def("isa", [] { return std::string(isa_name(active_isa())); }, "The kernel family in use.");
  m.def("supported_isas", &supported_isa_names, "Kernel families this CPU supports, fastest first.");
  m.def("set_num_threads", &set_num_threads, py::arg("n"), "Threads used by native kernels (1 <= n <= 1024).");
  m.def("get_num_threads", &get_num_threads, "Threads used by native kernels.");
  m.def("build_info", &build_info, "Version, build type, compiler and flags of this build.");
  m.def(
      "empty",
      [](const std::vector<py::ssize_t>& shape, const py::object& dtype) {
        const py::dtype dt = py::dtype::from_args(dtype);
        if (dt.kind() != 'f' || (dt.itemsize() != 4 && dt.itemsize() != 8)) {
          throw type_error("empty: dtype must be float32 or float64");
        }
        for (py::ssize_t d : shape) {
          if (d < 0) throw value_error("empty: negative dimension");
        }
        std::size_t elements = 1;
        for (py::ssize_t d : shape) {
          if (__builtin_mul_overflow(elements, static_cast<std::size_t>(d), &elements) || elements > (std::size_t{1} << 58)) {
            throw std::bad_alloc();
          }
        }
        return elements * static_cast<std::size_t>(dt.itemsize()) >= bindings::kCachedArrayBytes ? bindings::cached_array(dt, shape)
                                                                                         : py::array(dt, shape);
      },
      py::arg("shape"), py::arg("dtype"),
      "An uninitialized C-contiguous float array; large ones on memory of the workspace cache (no page faults).");
  m.def(
      "empty_cache",
      [] {
        empty_weight_cache();  // first: its entries' buffers return to the workspace cache, then are freed
        empty_cache();
      },
      "Drop the weight cache and free the idle scratch buffers kept for reuse.");
  m.def(
      "weight_cache_info",
      [] {
        const WeightCacheStats s = weight_cache_stats();
        py::dict d;
        d["entries"] = s.entries;
        d["bytes"] = s.bytes;
        d["limit_bytes"] = s.limit;
        d["hits"] = s.hits;
        d["misses"] = s.misses;
        d["stored"] = s.builds_stored;
        return d;
      },
      "Weight cache counters: entries, bytes, limit_bytes, hits, misses, stored (core/weight_cache.h).");
  m.def("workspace_bytes", &workspace_bytes, "Bytes held by the scratch-buffer cache (idle and in use).");

  m.def("relu", &relu, py::arg("x"), "relu(x) in a new C-contiguous array of x's dtype.");
  m.def("relu_backward", &relu_backward, py::arg("grad_output"), py::arg("output"),
        "grad_output where output > 0, else 0, in a new array.");

  bindings::bind_pool(m);
  bindings::bind_norm(m);
  bindings::bind_gemm(m);
  bindings::bind_pointwise(m);
  bindings::bind_conv(m);
  bindings::bind_rnn(m);

  m.def("peak_gflops",
        [](int threads, double seconds) {
          py::gil_scoped_release nogil;
          return probe::peak_gflops(threads, seconds);
        },
        py::arg("threads"), py::arg("seconds") = 0.5,
        "FP32 FMA throughput (GFLOP/s) of `threads` concurrent threads with the kernel family in use.");
  m.def("copy_bandwidth",
        [](int threads, std::size_t nbytes) {
          py::gil_scoped_release nogil;
          return probe::copy_bandwidth(threads, nbytes);
        },
        py::arg("threads"), py::arg("nbytes") = std::size_t{1} << 28,
        "Copy bandwidth (GB/s, read + written) of `threads` threads over an nbytes buffer, best of 5.");

  m.def("_test_raise", &test_raise, py::arg("kind"));
  m.def("_test_parallel_ranges", &test_parallel_ranges, py::arg("n_tasks"));
  m.def("_test_ftz_inside", &test_ftz_inside);
  m.def("_test_workspace", [](std::size_t nbytes) {
    ScratchBuffer buffer = acquire_scratch(nbytes);
    return reinterpret_cast<std::uintptr_t>(buffer.data()) % 64 == 0;
  }, py::arg("nbytes"), "Check a scratch buffer out and back in; True if it was 64-byte aligned.");
}
