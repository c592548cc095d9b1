// pagedjit-bench's CPU parts: the --case parser and the cases file (with the
// errors that point at a bad field), the peers conversion, the SVG chart and
// the text table (through --svg-from-json).
#include <doctest/doctest.h>
#include <fmt/format.h>

#include <algorithm>
#include <sstream>
#include <string>
#include <vector>

#include "../tools/bench/peers.hpp"
#include "../tools/bench/svg_chart.hpp"
#include "../tools/common/cases.hpp"
#include "run_command.hpp"
#include "temp_files.hpp"

using namespace pjbench;
using pagedjit::CacheLayout;
using pagedjit::DType;

namespace {

// The CaseError a bad case string throws.
CaseError case_error(const std::string& text) {
  try {
    parse_case_string(text);
  } catch (const CaseError& e) {
    return e;
  }
  FAIL("no error for: " << text);
  return CaseError("", "");
}

CaseError file_error(const std::string& json) {
  try {
    parse_cases_json(json, "test.json");
  } catch (const CaseError& e) {
    return e;
  }
  FAIL("no error for: " << json);
  return CaseError("", "");
}

// The text of `text` the error points at.
std::string pointed(const std::string& text, const CaseError& e) {
  REQUIRE(e.pos() != CaseError::npos);
  return text.substr(e.pos(), e.len());
}

const char* kBase = "batch=2,q_heads=8,kv_heads=2,head_dim=64,ctx=100";

}  // namespace

TEST_SUITE("cpu") {
  TEST_CASE("bench --case: the issue's example") {
    const BenchCase c =
        parse_case_string("name=x,batch=8,q_heads=40,kv_heads=8,head_dim=128,page_size=16,ctx=65536,dtype=fp16");
    CHECK(c.name == "x");
    CHECK(c.batch == 8);
    CHECK(c.q_heads == 40);
    CHECK(c.kv_heads == 8);
    CHECK(c.head_dim == 128);
    CHECK(c.page_size == 16);
    CHECK(c.dtype == DType::f16);
    CHECK(c.layout == CacheLayout::blocks_heads);
    CHECK(c.ctx.kind == ContextSpec::Kind::fixed);
    CHECK(c.context_lens() == std::vector<int>(8, 65536));
    CHECK(c.uniform_lengths());
    CHECK(c.origin == "--case");
    // BENCHMARK.md: sum(context_lens) * kv_heads * head_dim * 2 * bytes + q and output bytes.
    CHECK(c.kv_bytes() == 8ll * 65536 * 8 * 128 * 2 * 2);
    CHECK(c.bytes() == c.kv_bytes() + 2ll * 8 * 40 * 128 * 2);
    const auto p = c.problem(0);
    CHECK(p.num_heads == 40);
    CHECK(p.num_kv_heads == 8);
    CHECK(p.dtype == DType::f16);
    CHECK(p.out_dtype == DType::f16);
    CHECK(p.context_lens.size() == 8);
    CHECK(c.problem(1).seed != p.seed);  // another input set: other data and page order
  }

  TEST_CASE("bench --case: defaults, suffixes and options") {
    const BenchCase c = parse_case_string(kBase);
    CHECK(c.page_size == 16);
    CHECK(c.dtype == DType::bf16);
    CHECK(c.splits == 0);
    CHECK(!c.window);
    CHECK(!c.soft_cap);
    CHECK(c.name == "b2_h8x2_d64_p16_c100_bf16");

    const BenchCase d = parse_case_string(
        "batch=1,q_heads=4,kv_heads=4,head_dim=128,ctx=32k,layout=heads_blocks,window=1k,soft_cap=30.5,splits=4,"
        "seed=7,kv_dtype=bf16,page_size=64");
    CHECK(d.ctx.value == 32768);
    CHECK(d.layout == CacheLayout::heads_blocks);
    CHECK(d.page_size == 64);
    REQUIRE(d.window);
    CHECK(*d.window == 1024);
    REQUIRE(d.soft_cap);
    CHECK(*d.soft_cap == doctest::Approx(30.5));
    CHECK(d.splits == 4);
    CHECK(d.seed == 7);
    const auto o = d.options();
    CHECK(o.num_splits == 4);
    CHECK(o.sliding_window.value() == 1024);
    CHECK(o.attn_logits_soft_cap.value() == doctest::Approx(30.5));
    // A window bounds what a call must read.
    CHECK(d.tokens() == 32768);
    CHECK(d.tokens_read() == 1024);
    CHECK(d.kv_bytes() == 1024ll * 4 * 128 * 2 * 2);
  }

  TEST_CASE("bench --case: ctx=var:N gives reproducible uniform lengths in [1, N]") {
    const BenchCase c = parse_case_string("batch=500,q_heads=8,kv_heads=8,head_dim=64,ctx=var:8192,seed=3");
    CHECK(c.ctx.kind == ContextSpec::Kind::uniform_random);
    CHECK(!c.uniform_lengths());
    const auto lens = c.context_lens();
    REQUIRE(lens.size() == 500);
    int lo = 1 << 30, hi = 0;
    for (int l : lens) lo = std::min(lo, l), hi = std::max(hi, l);
    CHECK(lo >= 1);
    CHECK(hi <= 8192);
    CHECK(hi - lo > 4000);            // spread over the range
    CHECK(c.context_lens() == lens);  // the same lengths every time (and for every input set)
    CHECK(c.problem(0).context_lens == c.problem(5).context_lens);
    const BenchCase other = parse_case_string("batch=500,q_heads=8,kv_heads=8,head_dim=64,ctx=var:8192,seed=4");
    CHECK(other.context_lens() != lens);
    CHECK(parse_case_string("batch=3,q_heads=8,kv_heads=8,head_dim=64,ctx=var:4k").ctx.value == 4096);
  }

  TEST_CASE("bench --case: a bad field is named and pointed at") {
    struct Bad {
      std::string text, field, at;
    };
    const std::string b = kBase;
    const std::vector<Bad> bad = {
        {"name=x,batch=eight,q_heads=8,kv_heads=2,head_dim=64,ctx=100", "batch", "batch=eight"},
        {"batch=0,q_heads=8,kv_heads=2,head_dim=64,ctx=100", "batch", "batch=0"},
        {"batch=-3,q_heads=8,kv_heads=2,head_dim=64,ctx=100", "batch", "batch=-3"},
        {"batch=2,q_heads=6,kv_heads=4,head_dim=64,ctx=100", "q_heads", "q_heads=6"},
        {"batch=2,q_heads=8,kv_heads=x,head_dim=64,ctx=100", "kv_heads", "kv_heads=x"},
        {"batch=2,q_heads=8,kv_heads=2,head_dim=,ctx=100", "head_dim", "head_dim="},
        {b + ",ctx=200", "ctx", "ctx=200"},  // given twice
        {"batch=2,q_heads=8,kv_heads=2,head_dim=64,ctx=var:0", "ctx", "ctx=var:0"},
        {"batch=2,q_heads=8,kv_heads=2,head_dim=64,ctx=long", "ctx", "ctx=long"},
        {"batch=2,q_heads=8,kv_heads=2,head_dim=64,ctx=0", "ctx", "ctx=0"},
        {b + ",dtype=fp8", "dtype", "dtype=fp8"},
        {b + ",dtype=int32", "dtype", "dtype=int32"},
        {b + ",kv_dtype=fp16", "kv_dtype", "kv_dtype=fp16"},
        {b + ",layout=nhd", "layout", "layout=nhd"},
        {b + ",window=0", "window", "window=0"},
        {b + ",soft_cap=-1", "soft_cap", "soft_cap=-1"},
        {b + ",soft_cap=abc", "soft_cap", "soft_cap=abc"},
        {b + ",soft_cap=inf", "soft_cap", "soft_cap=inf"},
        {b + ",splits=-1", "splits", "splits=-1"},
        {b + ",page_size=0", "page_size", "page_size=0"},
        {b + ",batchsize=4", "batchsize", "batchsize=4"},
        {b + ",name=a<b", "name", "name=a<b"},
        {b + ",page_size", "page_size", "page_size"},
        {b + ",", "case", ""},
        {"batch=2,,q_heads=8,kv_heads=2,head_dim=64,ctx=100", "case", ""},
        {"batch=99999999999,q_heads=8,kv_heads=2,head_dim=64,ctx=100", "batch", "batch=99999999999"},
    };
    for (const Bad& x : bad) {
      CAPTURE(x.text);
      const CaseError e = case_error(x.text);
      CHECK(e.field() == x.field);
      CHECK(std::string(e.what()).find(x.field) != std::string::npos);
      if (!x.at.empty()) CHECK(pointed(x.text, e) == x.at);
    }
  }

  TEST_CASE("bench --case: a missing required field names it") {
    for (const char* f : {"batch", "q_heads", "kv_heads", "head_dim", "ctx"}) {
      std::string text;
      for (const char* item : {"batch=2", "q_heads=8", "kv_heads=2", "head_dim=64", "ctx=100"})
        if (std::string(item).rfind(f, 0) != 0) text += (text.empty() ? "" : ",") + std::string(item);
      CAPTURE(text);
      const CaseError e = case_error(text);
      CHECK(e.field() == f);
      CHECK(std::string(e.what()).find("missing") != std::string::npos);
    }
    CHECK(case_error("").field() == "case");
  }

  TEST_CASE("bench --case: the error message has a caret line under the field") {
    const std::string text = "name=x,batch=8,q_heads=40,kv_heads=8,head_dim=128,ctx=lots";
    const CaseError e = case_error(text);
    const std::string msg = format_case_error(text, e);
    const auto nl1 = msg.find('\n'), nl2 = msg.find('\n', nl1 + 1);
    REQUIRE(nl2 != std::string::npos);
    const std::string first = msg.substr(0, nl1), second = msg.substr(nl1 + 1, nl2 - nl1 - 1),
                      third = msg.substr(nl2 + 1);
    CHECK(first.find("ctx") != std::string::npos);
    CHECK(first.find("lots") != std::string::npos);
    const auto col = second.find("ctx=lots");
    REQUIRE(col != std::string::npos);
    CHECK(third.find('^') == col);
    CHECK(third.substr(col) == std::string(std::string("ctx=lots").size(), '^'));
  }

  TEST_CASE("bench cases file: the format of bench/cases.json") {
    const std::string json = R"({
      "about": "test", "dtype": "fp16",
      "cases": [
        {"name": "a", "batch": 4, "q_heads": 32, "kv_heads": 8, "head_dim": 128, "page_size": 16, "ctx": 4096},
        {"name": "v", "batch": 3, "q_heads": 8, "kv_heads": 8, "head_dim": 64, "page_size": 16,
         "ctx": {"lengths": [5, 0, 1000]}},
        {"name": "r", "batch": 3, "q_heads": 8, "kv_heads": 8, "head_dim": 64, "ctx": "var:100", "dtype": "bf16"},
        {"name": "s", "q_heads": 8, "kv_heads": 8, "head_dim": 64, "ctx": {"lengths": [7, 8]}, "soft_cap": 50}
      ]})";
    const auto cases = parse_cases_json(json, "test.json");
    REQUIRE(cases.size() == 4);
    CHECK(cases[0].name == "a");
    CHECK(cases[0].dtype == DType::f16);  // the top-level default
    CHECK(cases[0].origin == "test.json");
    CHECK(cases[0].tokens() == 4 * 4096);
    CHECK(cases[1].context_lens() == std::vector<int>{5, 0, 1000});
    CHECK(!cases[1].uniform_lengths());
    CHECK(cases[1].tokens() == 1005);
    CHECK(cases[2].dtype == DType::bf16);  // a case's own value wins
    CHECK(cases[2].ctx.kind == ContextSpec::Kind::uniform_random);
    CHECK(cases[3].batch == 2);  // from the lengths
    CHECK(cases[3].soft_cap.value() == doctest::Approx(50));

    const auto sel = select_cases(cases, "r,a");
    REQUIRE(sel.size() == 2);
    CHECK(sel[0].name == "r");
    CHECK(sel[1].name == "a");
    try {
      select_cases(cases, "a,zz");
      FAIL("no error");
    } catch (const CaseError& e) {
      CHECK(e.field() == "only");
      CHECK(std::string(e.what()).find("zz") != std::string::npos);
    }
  }

  TEST_CASE("bench cases file: errors name the case and the field") {
    const auto one = [](const std::string& fields) { return R"({"cases": [{"name": "c1", )" + fields + "}]}"; };
    const std::string ok = R"("batch": 2, "q_heads": 8, "kv_heads": 2, "head_dim": 64)";
    struct Bad {
      std::string json, field;
    };
    const std::vector<Bad> bad = {
        {one(ok + R"(, "ctx": -5)"), "ctx"},
        {one(ok + R"(, "ctx": {"lengths": [1, 2, 3]})"), "ctx"},  // 3 lengths for batch 2
        {one(ok + R"(, "ctx": {"lengths": []})"), "ctx"},
        {one(ok + R"(, "ctx": {"lengths": [1, -2]})"), "ctx"},
        {one(ok + R"(, "ctx": {"max": 3})"), "ctx"},
        {one(ok + R"(, "ctx": 10, "batch_size": 3)"), "batch_size"},
        {one(ok + R"(, "ctx": 10, "dtype": true)"), "dtype"},
        {one(R"("batch": 2, "q_heads": 8, "head_dim": 64, "ctx": 10)"), "kv_heads"},
        {R"({"cases": [{"batch": 2, "q_heads": 8, "kv_heads": 2, "head_dim": 64, "ctx": 10}]})", "name"},
        {R"({"cases": [{"name": "a", )" + ok + R"(, "ctx": 1}, {"name": "a", )" + ok + R"(, "ctx": 2}]})", "name"},
        {R"({"dtype": "fp9", "cases": []})", "dtype"},
        {R"({"cases": 3})", "cases"},
        {R"({"cases": [)", "cases"},
    };
    for (const Bad& x : bad) {
      CAPTURE(x.json);
      const CaseError e = file_error(x.json);
      CHECK(e.field() == x.field);
      CHECK(e.pos() == CaseError::npos);
      CHECK(std::string(e.what()).find("test.json") != std::string::npos);
    }
    const CaseError e = file_error(one(ok + R"(, "ctx": -5)"));
    CHECK(std::string(e.what()).find("\"c1\"") != std::string::npos);
  }

  TEST_CASE("bench --case: ragged cases, q groups and cached tokens") {
    const BenchCase c = parse_case_string("name=pf,q_heads=32,kv_heads=8,head_dim=128,q=4096x8,cached=28k");
    CHECK(c.ragged());
    CHECK(c.batch == 8);  // from q
    REQUIRE(c.groups.size() == 1);
    CHECK(c.groups[0].q_len == 4096);
    CHECK(c.groups[0].count == 8);
    CHECK(c.groups[0].cached == 28672);
    CHECK(c.context_lens() == std::vector<int>(8, 28672 + 4096));  // cached + the new tokens
    CHECK(c.q_lens() == std::vector<int>(8, 4096));
    CHECK(c.query_tokens() == 8 * 4096);
    CHECK(c.q_text() == "4kx8");
    CHECK(c.cached_text() == "28k");
    CHECK(c.shape_text() == "ragged h32/8 d128 p16 q=4kx8 cached=28k bf16 blocks_heads");
    // q and output of every query token, K and V of every context token.
    CHECK(c.bytes() == 8ll * 32768 * 8 * 128 * 2 * 2 + 2 * 8ll * 4096 * 32 * 128 * 2);
    // Causal work: token i of a sequence sits at 28672 + i and sees 28673 + i keys.
    const double keys = 8 * (4096.0 * 28673 + 4095.0 * 4096 / 2);
    CHECK(c.causal_flops() == doctest::Approx(4.0 * 128 * 32 * keys));

    const BenchCase m = parse_case_string("q_heads=32,kv_heads=8,head_dim=128,q=2048+1x127,cached=0+4095");
    CHECK(m.batch == 128);
    REQUIRE(m.groups.size() == 2);
    CHECK(m.context_lens()[0] == 2048);
    CHECK(m.context_lens()[1] == 4096);
    CHECK(m.context_lens()[127] == 4096);
    CHECK(m.query_tokens() == 2048 + 127);
    CHECK(m.q_text() == "2k+1x127");
    CHECK(m.cached_text() == "0+4095");
    CHECK(m.name == "rg_h32x8_d128_p16_q2k+1x127_c0+4095_bf16");

    // cached defaults to 0; a window bounds the visible keys.
    const BenchCase small = parse_case_string("q_heads=2,kv_heads=1,head_dim=64,q=4,cached=2");
    CHECK(small.context_lens() == std::vector<int>{6});
    CHECK(small.causal_flops() == doctest::Approx(4.0 * 64 * 2 * (3 + 4 + 5 + 6)));
    CHECK(parse_case_string("q_heads=2,kv_heads=1,head_dim=64,q=3x2").context_lens() == std::vector<int>{3, 3});
    const BenchCase win = parse_case_string("q_heads=2,kv_heads=1,head_dim=64,q=4,cached=2,window=2");
    CHECK(win.causal_flops() == doctest::Approx(4.0 * 64 * 2 * 8));
    // A decode case: one query token per sequence, as before.
    const BenchCase dec = parse_case_string(kBase);
    CHECK(!dec.ragged());
    CHECK(dec.query_tokens() == 2);
    CHECK(dec.q_lens() == std::vector<int>{1, 1});
  }

  TEST_CASE("bench --case: a bad ragged field is named and pointed at") {
    const std::string heads = "q_heads=8,kv_heads=2,head_dim=64,";
    struct Bad {
      std::string text, field, at;
    };
    const std::vector<Bad> bad = {
        {heads + "q=4096x", "q", "q=4096x"},
        {heads + "q=0", "q", "q=0"},
        {heads + "q=1++2", "q", "q=1++2"},
        {heads + "q=abc", "q", "q=abc"},
        {heads + "q=2x100000", "q", "q=2x100000"},
        {heads + "q=4,cached=1+2", "cached", "cached=1+2"},
        {heads + "q=4,cached=-1", "cached", "cached=-1"},
        {heads + "q=4,ctx=5", "ctx", "ctx=5"},
        {heads + "q=4,q_len=2", "q_len", "q_len=2"},
        {heads + "q=2x3,batch=4", "batch", "batch=4"},
        {heads + "ctx=5,batch=1,cached=5", "cached", "cached=5"},
    };
    for (const Bad& x : bad) {
      CAPTURE(x.text);
      const CaseError e = case_error(x.text);
      CHECK(e.field() == x.field);
      CHECK(pointed(x.text, e) == x.at);
    }
    const CaseError missing = case_error("q_heads=8,kv_heads=2,q=4");
    CHECK(missing.field() == "head_dim");
  }

  TEST_CASE("bench cases file: ragged cases, q and cached as lists") {
    const std::string json = R"({
      "dtype": "bf16",
      "cases": [
        {"name": "list", "q_heads": 8, "kv_heads": 2, "head_dim": 64, "q": [16, 1, 1], "cached": [0, 99, 99]},
        {"name": "spec", "q_heads": 8, "kv_heads": 2, "head_dim": 64, "q": "16+1x2", "cached": "0+99"},
        {"name": "one", "q_heads": 8, "kv_heads": 2, "head_dim": 64, "q": 4096, "cached": "4k"}
      ]})";
    const auto cases = parse_cases_json(json, "test.json");
    REQUIRE(cases.size() == 3);
    CHECK(cases[0].context_lens() == std::vector<int>{16, 100, 100});
    CHECK(cases[0].context_lens() == cases[1].context_lens());
    CHECK(cases[0].q_lens() == cases[1].q_lens());
    CHECK(cases[0].groups.size() == 3);
    CHECK(cases[1].groups.size() == 2);
    CHECK(cases[2].context_lens() == std::vector<int>{8192});
    const CaseError e = file_error(
        R"({"cases": [{"name": "x", "q_heads": 8, "kv_heads": 2, "head_dim": 64, "q": [4, 4], "cached": [1, 2, 3]}]})");
    CHECK(e.field() == "cached");
    CHECK(std::string(e.what()).find("\"x\"") != std::string::npos);

#ifdef PAGEDJIT_BENCH_DIR
    // The shipped file: the issue's prefill, shape and mixed cases, all ragged.
    const auto shipped = load_cases_file(std::string(PAGEDJIT_BENCH_DIR) + "/cases-ragged.json");
    std::vector<std::string> names;
    for (const BenchCase& c : shipped) {
      CHECK(c.ragged());
      names.push_back(c.name);
    }
    for (const char* n : {"pf_b1_c0", "pf_b1_c4k", "pf_b1_c28k", "pf_b8_c0", "pf_b8_c4k", "pf_b8_c28k", "pf_d64_b1_c4k",
                          "pf_d256_b1_c4k", "pf_g1_b1_c4k", "pf_g7_b1_c4k", "mix_c0_127d"})
      CHECK_MESSAGE(std::find(names.begin(), names.end(), n) != names.end(), n);
    const auto pf = select_cases(shipped, "pf_b8_c28k,mix_c0_127d");
    CHECK(pf[0].batch == 8);
    CHECK(pf[0].context_lens()[7] == 28 * 1024 + 4096);
    CHECK(pf[0].dtype == DType::bf16);
    CHECK(pf[0].page_size == 16);
    CHECK(pf[1].groups.size() == 2);
    CHECK(pf[1].query_tokens() == 2048 + 127);
    CHECK(pf[1].context_lens()[1] == 4096);
#endif
  }

  TEST_CASE("bench peers: milliseconds become fractions of this run's read bandwidth") {
    // Two cases: uniform lengths (compared by time) and explicit lengths (only
    // through the peer's own token count, or a fraction of copy).
    Json run;
    run["bandwidth"] = Json{{"copy_GBps", 3000.0}, {"read_GBps", 3100.0}};
    run["cases"] = Json::array();
    run["cases"].push_back(Json{{"name", "u"},
                                {"uniform_lengths", true},
                                {"bytes", 1e9},
                                {"kv_bytes", 0.99e9},
                                {"tokens_read", 1000},
                                {"GBps", 2900.0},
                                {"time_ms", 1e9 / 2900e6},
                                {"error", nullptr}});
    run["cases"].push_back(Json{{"name", "v"},
                                {"uniform_lengths", false},
                                {"bytes", 1e9},
                                {"kv_bytes", 1e9},
                                {"tokens_read", 1000},
                                {"GBps", 2800.0},
                                {"error", nullptr}});
    const Json peers = Json::parse(R"({
      "gpu": "test GPU", "copy_GBps": 2000,
      "peers": {"p1": {"u": 0.5, "v": 1.0}, "p2": {"u": 0.4, "v": 2.0}, "p3": {"v": 9.0}},
      "tokens": {"p2": {"v": 3000}},
      "p3_v_fraction_of_copy": 0.5
    })");
    const Json out = compare_with_peers_json(run, peers, "peers.json");
    CHECK(out["names"].size() == 3);
    const Json& u = out["cases"][0];
    CHECK(u["best_peer"] == "p2");
    CHECK(u["best_peer_ms"].get<double>() == doctest::Approx(0.4));
    CHECK(u["peers"]["p1"]["frac_read"].get<double>() == doctest::Approx(1e9 / 0.5e-3 / 1e9 / 3100));
    CHECK(u["ratio"].get<double>() == doctest::Approx(0.4 / (1e9 / 2900e6)));
    CHECK(!u["partial"].get<bool>());
    const Json& v = out["cases"][1];
    CHECK(!v["peers"]["p1"]["comparable"].get<bool>());  // other lengths, nothing to convert with
    CHECK(v["partial"].get<bool>());
    // p2 read 3x the tokens: 3e9 bytes in 2 ms = 1500 GB/s; p3: 0.5 of 2000 GB/s = 1000 GB/s.
    CHECK(v["peers"]["p2"]["GBps"].get<double>() == doctest::Approx(1500));
    CHECK(v["peers"]["p3"]["GBps"].get<double>() == doctest::Approx(1000));
    CHECK(v["best_peer"] == "p2");
    CHECK(v["best_peer_ms"].is_null());  // not the same bytes: compared per byte
    CHECK(v["ratio"].get<double>() == doctest::Approx(2800.0 / 1500));
    // A partial comparison may miss the best peer: it stays out of the geomean.
    CHECK(out["geomean_cases"] == 1);
    CHECK(out["geomean_excludes_partial"] == 1);
    CHECK(out["geomean_ratio"].get<double>() == doctest::Approx(2900.0 / 2500));
  }

  TEST_CASE("bench svg: title, axes, legend, every case and peer") {
    Json run;
    run["gpu"] = Json{{"name", "Test GPU & co"}};
    run["bandwidth"] = Json{{"copy_GBps", 3000.0}, {"read_GBps", 3100.0}};
    run["settings"] = Json{{"reps", 200}};
    run["cases"] = Json::array();
    for (const char* name : {"case_one", "case_two", "broken"}) {
      Json row{{"name", name},    {"frac_read", 0.91}, {"GBps", 2821.0},          {"bytes", 1e9},
               {"kv_bytes", 1e9}, {"tokens_read", 10}, {"uniform_lengths", true}, {"error", nullptr}};
      if (std::string(name) == "broken") row["error"] = "not_supported: no";
      run["cases"].push_back(row);
    }
    run["peers"] = compare_with_peers_json(
        run, Json::parse(R"({"gpu": "H", "peers": {"peerA": {"case_one": 0.4}, "peerB": {"case_two": 0.3}}})"),
        "/x/peers.json");
    const std::string svg = render_svg(run);
    CHECK(svg.rfind("<svg xmlns=\"http://www.w3.org/2000/svg\"", 0) == 0);
    CHECK(svg.find("</svg>") != std::string::npos);
    for (const char* text : {"fraction of read bandwidth per case", "fraction of read-only bandwidth", ">case<",
                             "legend", "pagedjit (this run)", "peerA", "peerB", "case_one", "case_two", "broken",
                             "target: 0.95 of read", "Test GPU &amp; co", "peers.json", ">error<"})
      CHECK_MESSAGE(svg.find(text) != std::string::npos, text);
    CHECK(svg.find("Test GPU & co") == std::string::npos);  // escaped
  }

#ifdef PAGEDJIT_BENCH_TOOL
  TEST_CASE("pagedjit-bench: --cases repeats, each file's cases in order; a name twice is refused") {
    const std::string both = fmt::format("'{}' --list --cases '{}/cases.json' --cases '{}/cases-issue8.json' 2>&1",
                                         PAGEDJIT_BENCH_TOOL, PAGEDJIT_BENCH_DIR, PAGEDJIT_BENCH_DIR);
    const pjtest::RunResult r = pjtest::run_command(both);
    CAPTURE(r.out);
    CHECK(r.status == 0);
    const auto first = r.out.find("l8b_b64_c4k "), fp8 = r.out.find("l8b_b64_c4k_fp8 "),
               q4 = r.out.find("l8b_b1_c128k_q4 ");
    CHECK(first != std::string::npos);
    CHECK(fp8 != std::string::npos);
    CHECK(q4 != std::string::npos);
    CHECK(first < fp8);
    const pjtest::RunResult twice =
        pjtest::run_command(fmt::format("'{}' --list --cases '{}/cases.json' --cases '{}/cases.json' 2>&1",
                                        PAGEDJIT_BENCH_TOOL, PAGEDJIT_BENCH_DIR, PAGEDJIT_BENCH_DIR));
    CAPTURE(twice.out);
    CHECK(twice.status == 2);
    CHECK(twice.out.find("two cases are named \"l8b_b64_c4k\"") != std::string::npos);
  }

  TEST_CASE("pagedjit-bench: bench/cases-groups.json has one shape per group 1, 4, 7, 8; --specialize parses") {
    const pjtest::RunResult r = pjtest::run_command(
        fmt::format("'{}' --list --cases '{}/cases-groups.json' --specialize page,group,splits 2>&1",
                    PAGEDJIT_BENCH_TOOL, PAGEDJIT_BENCH_DIR));
    CAPTURE(r.out);
    CHECK(r.status == 0);
    for (const char* row :
         {"grp1_b32_c4k         b32 h8/8 d128 p16 ctx=4096 bf16", "grp4_b32_c4k         b32 h32/8 d128",
          "grp7_b32_c4k         b32 h56/8 d128", "grp8_b32_c4k         b32 h64/8 d128"})
      CHECK_MESSAGE(r.out.find(row) != std::string::npos, row);
    for (const char* ok : {"none", "page", "group", "splits", "splits,page"}) {
      CAPTURE(ok);
      CHECK(pjtest::run_command(fmt::format("'{}' --list --cases '{}/cases-groups.json' --specialize {} 2>&1",
                                            PAGEDJIT_BENCH_TOOL, PAGEDJIT_BENCH_DIR, ok))
                .status == 0);
    }
    for (const char* bad : {"pages", "page,page", "page,", "", "none,page"}) {
      CAPTURE(bad);
      const pjtest::RunResult b =
          pjtest::run_command(fmt::format("'{}' --list --cases '{}/cases-groups.json' --specialize '{}' 2>&1",
                                          PAGEDJIT_BENCH_TOOL, PAGEDJIT_BENCH_DIR, bad));
      CHECK(b.status == 2);
      CHECK(b.out.find("--specialize") != std::string::npos);
    }
  }

  TEST_CASE("pagedjit-bench: --list of the ragged cases, no GPU") {
    const pjtest::RunResult r = pjtest::run_command(
        fmt::format("'{}' --list --cases '{}/cases-ragged.json' 2>&1", PAGEDJIT_BENCH_TOOL, PAGEDJIT_BENCH_DIR));
    CAPTURE(r.out);
    CHECK(r.status == 0);
    CHECK(r.out.find("pf_b8_c28k") != std::string::npos);
    CHECK(r.out.find("ragged h32/8 d128 p16 q=4kx8 cached=28k bf16") != std::string::npos);
    CHECK(r.out.find("mix_c0_127d") != std::string::npos);
    const pjtest::RunResult spec = pjtest::run_command(fmt::format(
        "'{}' --list --case 'name=m,q_heads=4,kv_heads=4,head_dim=64,q=8+1x3,cached=0+7' 2>&1", PAGEDJIT_BENCH_TOOL));
    CAPTURE(spec.out);
    CHECK(spec.status == 0);
    CHECK(spec.out.find("query tokens 11") != std::string::npos);
    const pjtest::RunResult bad = pjtest::run_command(
        fmt::format("'{}' --list --case 'q_heads=4,kv_heads=4,head_dim=64,q=8+' 2>&1", PAGEDJIT_BENCH_TOOL));
    CHECK(bad.status == 2);
    CHECK(bad.out.find("^") != std::string::npos);
    const pjtest::RunResult help = pjtest::run_command(fmt::format("'{}' --help", PAGEDJIT_BENCH_TOOL));
    CHECK(help.out.find("--ragged-decode") != std::string::npos);
    CHECK(help.out.find("--gemm-ceiling") != std::string::npos);
  }

  TEST_CASE("pagedjit-bench: the ragged tables from a run's JSON (rg/pa, TFLOP/s, /gemm, 1/split)") {
    const pjtest::TempDir dir("pj-bench-ragged");
    Json run;
    run["version"] = "test";
    run["gpu"] = Json{{"name", "Test GPU"}};
    run["bandwidth"] = Json{{"copy_GBps", 3000.0}, {"read_GBps", 3300.0}};
    run["settings"] = Json{{"reps", 200}, {"read_floor", false}, {"gemm_ceiling_TFLOPs", 800.0}};
    const Json ok_check{{"rel_l2", 2e-3}, {"pass", true}};
    Json dec{{"name", "dec"},     {"bytes", 6e8},
             {"kv_bytes", 6e8},   {"error", nullptr},
             {"time_ms", 0.2},    {"GBps", 3000.0},
             {"frac_copy", 1.0},  {"frac_read", 0.9},
             {"check", ok_check}, {"l2", Json{{"mode", "rotate"}, {"sets", 1}}}};
    dec["ragged_decode"] =
        Json{{"error", nullptr}, {"time_ms", 0.203}, {"paged_ms", 0.2}, {"ratio", 1.015}, {"check", ok_check}};
    Json bad = dec;
    bad["name"] = "bad";
    bad["ragged_decode"]["check"] = Json{{"rel_l2", 0.5}, {"pass", false}};
    run["cases"] = Json::array({dec, bad});
    Json pf{{"name", "pf"},      {"error", nullptr},  {"time_ms", 2.0},
            {"TFLOPs", 400.0},   {"frac_gemm", 0.5},  {"GBps", 100.0},
            {"frac_read", 0.03}, {"check", ok_check}, {"l2", Json{{"mode", "flush"}}}};
    Json mix = pf;
    mix["name"] = "mix";
    mix["split"] = Json{{"sum_ms", 2.5}, {"ratio", 0.8}, {"check", ok_check}};
    run["ragged"] = Json::array({pf, mix});
    const std::string file = dir / "run.json";
    pjtest::write_file(file, run.dump());
    const pjtest::RunResult r =
        pjtest::run_command(fmt::format("'{}' --svg-from-json '{}' 2>&1", PAGEDJIT_BENCH_TOOL, file));
    CAPTURE(r.out);
    CHECK(r.status == 0);
    CHECK(r.out.find("rg/pa: geomean") != std::string::npos);
    CHECK(r.out.find("800 TFLOP/s bf16 GEMM ceiling") != std::string::npos);
    std::vector<std::string> pf_row, mix_row, dec_row;
    std::istringstream lines(r.out);
    for (std::string line; std::getline(lines, line);) {
      std::istringstream words(line);
      std::vector<std::string> v;
      for (std::string w; words >> w;) v.push_back(w);
      if (v.empty()) continue;
      if (v[0] == "pf") pf_row = v;
      if (v[0] == "mix") mix_row = v;
      if (v[0] == "dec") dec_row = v;  // the last "dec" line: the ragged-decode table's
    }
    REQUIRE(pf_row.size() >= 9);
    CHECK(pf_row[2] == "400.0");  // TFLOP/s
    CHECK(pf_row[3] == "0.500");  // /gemm
    CHECK(pf_row[6] == "-");      // no split
    REQUIRE(mix_row.size() >= 9);
    CHECK(mix_row[6] == "2.5000");
    CHECK(mix_row[7] == "0.800");
    REQUIRE(dec_row.size() >= 5);
    CHECK(dec_row[3] == "1.015");
    CHECK(r.out.find("1 case(s) FAILED") != std::string::npos);  // "bad": the ragged call's check failed
  }

  // The table's row of `name` (or its header line, name "case"), split at white space.
  std::vector<std::string> table_row(const std::string& out, const std::string& name) {
    std::istringstream lines(out);
    for (std::string line; std::getline(lines, line);)
      if (line.rfind(name + " ", 0) == 0) {
        std::istringstream words(line);
        std::vector<std::string> v;
        for (std::string w; words >> w;) v.push_back(w);
        return v;
      }
    return {};
  }

  TEST_CASE("pagedjit-bench: column /rd@sz = same-size read ms / case ms, after /read; - with the reason") {
    const pjtest::TempDir dir("pj-bench-report");
    Json run;
    run["version"] = "test";
    run["gpu"] = Json{{"name", "Test GPU"}};
    run["bandwidth"] = Json{{"copy_GBps", 3000.0}, {"read_GBps", 3300.0}};
    run["settings"] = Json{{"reps", 200}, {"read_floor", true}};
    run["cases"] = Json::array();
    const auto row = [](const char* name, double ms, Json read_ms, Json detail) {
      Json r{{"name", name},
             {"bytes", 6e8},
             {"kv_bytes", 6e8},
             {"tokens_read", 10},
             {"uniform_lengths", true},
             {"error", nullptr},
             {"time_ms", ms},
             {"GBps", 6e8 / (ms * 1e-3) / 1e9},
             {"frac_copy", 0.5},
             {"frac_read", 0.5},
             {"check", Json{{"rel_l2", 1e-3}, {"pass", true}}},
             {"l2", Json{{"mode", "rotate"}, {"sets", 1}}},
             {"read_same_size", detail},
             {"read_same_size_ms", read_ms},
             {"frac_read_same_size", read_ms.is_number() ? Json(read_ms.get<double>() / ms) : Json()}};
      return r;
    };
    run["cases"].push_back(row("fast", 0.2, 0.18, Json{{"ms", 0.18}, {"error", nullptr}}));
    run["cases"].push_back(row("slow", 0.25, 0.2, Json{{"ms", 0.2}, {"error", nullptr}}));
    run["cases"].push_back(row("nobuf", 0.2, Json(), Json{{"error", "no 9.00 GB read buffer: out of memory"}}));
    const std::string file = dir / "run.json";
    pjtest::write_file(file, run.dump());
    const pjtest::RunResult r =
        pjtest::run_command(fmt::format("'{}' --svg-from-json '{}' 2>&1", PAGEDJIT_BENCH_TOOL, file));
    CAPTURE(r.out);
    CHECK(r.status == 0);
    const std::vector<std::string> head = table_row(r.out, "case");
    REQUIRE(head.size() > 6);
    CHECK(head[4] == "/read");
    CHECK(head[5] == "/rd@sz");
    CHECK(head[6] == "rel");                                             // "rel err"
    CHECK(r.out.find("/rd@sz: a streaming read") != std::string::npos);  // the header explains it
    // 0.18 / 0.2 and 0.2 / 0.25: the read's time over the case's, not the inverse.
    const std::vector<std::string> fast = table_row(r.out, "fast"), slow = table_row(r.out, "slow"),
                                   nobuf = table_row(r.out, "nobuf");
    REQUIRE(fast.size() > 6);
    REQUIRE(slow.size() > 6);
    REQUIRE(nobuf.size() > 6);
    CHECK(fast[5] == "0.900");
    CHECK(slow[5] == "0.800");
    CHECK(nobuf[5] == "-");
    CHECK(nobuf[6] == "1.0e-03");  // the columns after it stay in place
    CHECK(r.out.find("/rd@sz -: no 9.00 GB read buffer: out of memory") != std::string::npos);

    // --no-read-floor: no column, no explanation.
    run["settings"]["read_floor"] = false;
    for (Json& c : run["cases"])
      for (const char* k : {"read_same_size", "read_same_size_ms", "frac_read_same_size"}) c.erase(k);
    pjtest::write_file(file, run.dump());
    const pjtest::RunResult off =
        pjtest::run_command(fmt::format("'{}' --svg-from-json '{}' 2>&1", PAGEDJIT_BENCH_TOOL, file));
    CAPTURE(off.out);
    CHECK(off.status == 0);
    CHECK(off.out.find("/rd@sz") == std::string::npos);
    const std::vector<std::string> off_fast = table_row(off.out, "fast");
    REQUIRE(off_fast.size() > 5);
    CHECK(off_fast[5] == "1.0e-03");

    const pjtest::RunResult help = pjtest::run_command(fmt::format("'{}' --help", PAGEDJIT_BENCH_TOOL));
    CHECK(help.out.find("--no-read-floor") != std::string::npos);
  }
#endif
}
