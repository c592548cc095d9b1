// Checks of single views and of the memory a call touches, shared by the
// validation of every call (validate.cpp). Each failure names the argument,
// what was expected and what was given.
#pragma once
#include <cstdint>
#include <vector>

#include "pagedjit/tensor.hpp"

namespace pagedjit::checks {

// No view may span more bytes than this: more than any GPU's memory, and far
// enough below 2^63 that no offset the kernel computes can overflow.
constexpr std::int64_t kMaxViewBytes = std::int64_t(1) << 40;

bool is_float(DType d);  // fp32, fp16 or bf16
void expect_rank(const TensorView& t, const char* name, int rank, const char* dims);
void expect_data(const TensorView& t, const char* name);
void expect_dim(const TensorView& t, const char* name, int axis, std::int64_t want, const char* what);
void expect_positive_shape(const TensorView& t, const char* name);
// block_tables: int32 [num_seqs, max_blocks] (`seqs_from` says where
// num_seqs comes from) with unit stride on max_blocks; returns max_blocks.
int block_table_width(const TensorView& bt, std::int64_t num_seqs, const char* seqs_from);
void expect_aligned(const TensorView& t, const char* name, std::int64_t bytes);
// Rows moved with 16-byte vector accesses: a 16-byte aligned pointer, unit
// stride on the last axis, the other strides non-negative multiples of 16 bytes.
void expect_vector_rows(const TensorView& t, const char* name);
// The bytes a view covers, from its pointer to the end of its last element
// (0 when it has no element); at most kMaxViewBytes, not wrapping around.
std::int64_t view_bytes(const TensorView& t, const char* name);
// For a view the kernel writes: no two elements share memory.
void expect_no_self_overlap(const TensorView& t, const char* name);
// For two written views of one shape and dtype (each checked by
// view_bytes and expect_no_self_overlap) that may interleave in one buffer:
// no element of one shares memory with an element of the other. Views whose
// byte ranges overlap must have the same strides and lie a whole number of
// elements apart, and the pair, seen as one view with an extra axis of two
// at that distance, must pass expect_no_self_overlap's rule.
void expect_no_shared_elements(const TensorView& a, const char* a_name, const TensorView& b, const char* b_name);

struct Range {
  const char* name;
  std::uintptr_t begin, end;
  bool written;
};

// Every written range is disjoint from every other range.
void expect_disjoint(const std::vector<Range>& ranges);

}  // namespace pagedjit::checks
