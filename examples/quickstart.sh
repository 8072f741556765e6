#!/bin/sh
# The README quick start, runnable against a fresh node started with `npm start`
# (no config file; `npm start` runs `millrace serve --examples`, which serves the
# example processor used in step 4). MILLRACE_URL picks another node (default http://127.0.0.1:7070).
set -eu
U="${MILLRACE_URL:-http://127.0.0.1:7070}"
j() { curl -sS --fail-with-body -H 'content-type: application/json' "$@"; echo; }

# 1. A bus topic, defined at runtime.
j -X PUT "$U/v1/bus/topics/orders" -d '{"description":"quick start"}'
# 2. A subscription reading it from the beginning, then publish two events.
j -X PUT "$U/v1/bus/subscriptions/billing" -d '{"topics":["orders"],"start":"earliest"}'
j -X POST "$U/v1/bus/topics/orders/events" -d '{"events":[{"key":"o-1","type":"created","data":{"total":10}},{"key":"o-2","type":"created","data":{"total":5}}]}'
# 3. Receive them over server-sent events (stop after 3 s), then the subscription's lag.
curl -sS -N --max-time 3 "$U/v1/bus/subscriptions/billing/stream" || true
echo
j "$U/v1/bus/subscriptions/billing"
# 4. A machine namespace with the built-in example processor, a machine, a call.
j -X PUT "$U/v1/namespaces/counters" -d '{"processor":{"in_process":"example.counter"}}'
j -X POST "$U/v1/namespaces/counters/machines/c1/start" -d '{"args":10}'
j -X POST "$U/v1/namespaces/counters/machines/c1/call" -d '{"args":5}'
j "$U/v1/namespaces/counters/machines?limit=10"
