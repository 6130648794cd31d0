// Everything an application needs: the worker runtime and the HTTP server.
#pragma once

#include <loopfleet/http.hpp>
#include <loopfleet/offload.hpp>
#include <loopfleet/runtime.hpp>
