// Everything an application needs, in one include: the worker runtime (runtime.hpp), the HTTP
// server (http.hpp), the offload pools (offload.hpp), the cluster layer (cluster.hpp) and its durable workflows
// (workflow.hpp).
#pragma once

#include <loopfleet/cluster.hpp>
#include <loopfleet/http.hpp>
#include <loopfleet/offload.hpp>
#include <loopfleet/runtime.hpp>
#include <loopfleet/workflow.hpp>
