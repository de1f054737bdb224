// A second CUDA stream per device, for work that one FFI call runs concurrently with the kernel it
// launches on XLA's stream. Fork: the side stream waits for everything enqueued on XLA's stream so
// far. Join: XLA's stream waits for everything enqueued on the side stream so far. Between the two,
// the side work and XLA's stream run concurrently; after the join, the call's work is complete in
// XLA's stream order, as if it had all been launched on that stream.
#pragma once

#include <cuda_runtime.h>

#include <mutex>

namespace jaxk::mace {

struct SideStreamState;  // a device's stream and its fork and join events (side_stream.cc)

// The current device's side stream, locked for one fork ... join sequence: the events are shared
// by every call on the device, so a second thread must not re-record them in between.
class SideStream {
 public:
  // Creates the current device's stream and events on first use (kept for the life of the
  // process) and locks them until this object is destroyed.
  cudaError_t Open();
  cudaStream_t stream() const;
  cudaError_t Fork(cudaStream_t main) const;
  cudaError_t Join(cudaStream_t main) const;

 private:
  SideStreamState* state_ = nullptr;
  std::unique_lock<std::mutex> lock_;
};

}  // namespace jaxk::mace
