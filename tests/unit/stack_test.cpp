#include "supervisor/stack.hpp"

#include <gtest/gtest.h>

using namespace loopfleet::supervisor;

TEST(PythonStack, NamesTheInnermostFrameOfTheApp) {
  // faulthandler's dump of a FastAPI handler that called time.sleep (a C function: no frame).
  std::vector<std::string> lines = {
      "Stack (most recent call first):",
      "  File \"/srv/shop/handlers.py\", line 14 in block",
      "  File \"/srv/shop/app.py\", line 9 in slow",
      "  File \"/usr/lib/python3/dist-packages/fastapi/routing.py\", line 161 in run_endpoint_function",
      "  File \"/usr/lib/python3/dist-packages/starlette/routing.py\", line 680 in __call__",
      "  File \"/work/py/python/loopfleet/asgi.py\", line 40 in serve",
      "  File \"/usr/lib/python3.11/asyncio/base_events.py\", line 1922 in _run_once",
      "  File \"<frozen runpy>\", line 88 in _run_code"};
  auto frames = parse_stack(lines);
  ASSERT_EQ(frames.size(), 7u);
  EXPECT_EQ(frames[0].text, "block() at /srv/shop/handlers.py:14");
  EXPECT_EQ(blocking_frame(frames), "block() at handlers.py:14");
}

TEST(PythonStack, SkipsTheStandardLibraryAndTheServers) {
  std::vector<std::string> lines = {
      "Stack (most recent call first):", "  File \"/usr/lib/python3.11/json/decoder.py\", line 337 in decode",
      "  File \"/usr/lib/python3/dist-packages/aiohttp/web_protocol.py\", line 433 in _handle_request",
      "  File \"/usr/lib/python3/dist-packages/myapp/views.py\", line 21 in parse",
      "  File \"/usr/lib/python3/dist-packages/aiohttp/web_app.py\", line 504 in _handle"};
  EXPECT_EQ(blocking_frame(parse_stack(lines)), "parse() at views.py:21");
}

TEST(PythonStack, RecognisesOnlyTracebackLines) {
  EXPECT_TRUE(is_python_stack_header("Stack (most recent call first):"));
  EXPECT_TRUE(is_python_stack_header("Current thread 0x00007f3a1c2b8740 (most recent call first):"));
  EXPECT_FALSE(is_python_stack_header("Traceback (most recent call last):"));
  EXPECT_TRUE(is_python_stack_line("  File \"/srv/app.py\", line 3 in <module>"));
  EXPECT_TRUE(is_python_stack_line("  ..."));
  EXPECT_FALSE(is_python_stack_line("INFO:     127.0.0.1:5000 - \"GET / HTTP/1.1\" 200 OK"));
}

TEST(PythonStack, NothingNamedWhenOnlyLibrariesRan) {
  std::vector<std::string> lines = {"  File \"/usr/lib/python3.11/selectors.py\", line 468 in select"};
  EXPECT_EQ(blocking_frame(parse_stack(lines)), "");
}

TEST(NativeStack, NamesTheFirstFrameOfTheProgram) {
  std::vector<std::string> lines = {"/usr/bin/chaos(print_stack+0x2a) [0x55d0c0a1b2c3]",
                                    "/lib/x86_64-linux-gnu/libc.so.6(+0x3bfd0) [0x7f0a2b43bfd0]",
                                    "/lib/x86_64-linux-gnu/libc.so.6(clock_nanosleep+0x65) [0x7f0a2b4e0c25]",
                                    "/usr/bin/chaos(_Z14block_the_loopi+0x3e) [0x55d0c0a1b300]"};
  EXPECT_EQ(blocking_frame(parse_stack(lines)), "block_the_loop(int)");
}
