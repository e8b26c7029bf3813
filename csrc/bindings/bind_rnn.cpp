// Recurrent cells and sequences (csrc/rnn/): LSTM, GRU and Elman RNN,
// forward and backward through time. Registered in backends/native/rnn.py.
#include <pybind11/pybind11.h>

#include "bindings/families.h"

namespace nnkern::bindings {

void bind_rnn(pybind11::module_& m) { (void)m; }

}  // namespace nnkern::bindings
