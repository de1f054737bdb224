// A second CUDA stream, for work that one FFI call runs concurrently with the kernel it launches on
// XLA's stream. Fork: the side stream waits for everything enqueued on XLA's stream so far. Join:
// XLA's stream waits for everything enqueued on the side stream so far. Between the two, the side
// work and XLA's stream run concurrently; after the join, the call's work is complete in XLA's
// stream order, as if it had all been launched on that stream.
//
// One stream (and pair of events) per calling thread and device. When XLA records a command buffer
// it captures the handler's work from XLA's stream into a CUDA graph: the fork pulls the side
// stream into that capture, and it stays there until XLA ends the capture, after the handler has
// returned. A stream shared between threads could meanwhile receive another call's work, which the
// capture would take in; a stream of the thread's own cannot.
#pragma once

#include <cuda_runtime.h>

namespace jaxk::mace {

struct SideStreamState;  // a stream and its fork and join events (side_stream.cc)

class SideStream {
 public:
  // The calling thread's stream and events on the current device, created on first use and
  // destroyed when the thread exits.
  cudaError_t Open();
  cudaStream_t stream() const;
  cudaError_t Fork(cudaStream_t main) const;
  cudaError_t Join(cudaStream_t main) const;

 private:
  SideStreamState* state_ = nullptr;
};

}  // namespace jaxk::mace
