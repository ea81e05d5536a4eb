# A gateway network at the edge: a cloud service, two gateways on a WAN and
# eight field devices on lossy, jittery radio links (lognormal latency,
# 2 % loss, 250 kbit/s). Read by scenarios/flaky_edge.toml. Node x and y
# only place hosts in the topology plot.
graph [
  node [
    id 0
    label "cloud"
    x 0.5
    y 1.0
  ]
  node [
    id 1
    label "gw1"
    x 0.25
    y 0.6
  ]
  node [
    id 2
    label "dev1"
    x 0.0625
    y 0.2
  ]
  node [
    id 3
    label "dev2"
    x 0.1875
    y 0.1
  ]
  node [
    id 4
    label "dev3"
    x 0.3125
    y 0.2
  ]
  node [
    id 5
    label "dev4"
    x 0.4375
    y 0.1
  ]
  node [
    id 6
    label "gw2"
    x 0.75
    y 0.6
  ]
  node [
    id 7
    label "dev5"
    x 0.5625
    y 0.2
  ]
  node [
    id 8
    label "dev6"
    x 0.6875
    y 0.1
  ]
  node [
    id 9
    label "dev7"
    x 0.8125
    y 0.2
  ]
  node [
    id 10
    label "dev8"
    x 0.9375
    y 0.1
  ]
  edge [
    source 0
    target 1
    latency_ms 40.0
    jitter_ms 5.0
    loss 0.001
    bandwidth_mbps 20.0
  ]
  edge [
    source 0
    target 6
    latency_ms 40.0
    jitter_ms 5.0
    loss 0.001
    bandwidth_mbps 20.0
  ]
  edge [
    source 1
    target 2
    latency "lognormal(median=0.03, sigma=0.5)"
    jitter_ms 10.0
    loss 0.02
    bandwidth_mbps 0.25
  ]
  edge [
    source 1
    target 3
    latency "lognormal(median=0.03, sigma=0.5)"
    jitter_ms 10.0
    loss 0.02
    bandwidth_mbps 0.25
  ]
  edge [
    source 1
    target 4
    latency "lognormal(median=0.03, sigma=0.5)"
    jitter_ms 10.0
    loss 0.02
    bandwidth_mbps 0.25
  ]
  edge [
    source 1
    target 5
    latency "lognormal(median=0.03, sigma=0.5)"
    jitter_ms 10.0
    loss 0.02
    bandwidth_mbps 0.25
  ]
  edge [
    source 6
    target 7
    latency "lognormal(median=0.03, sigma=0.5)"
    jitter_ms 10.0
    loss 0.02
    bandwidth_mbps 0.25
  ]
  edge [
    source 6
    target 8
    latency "lognormal(median=0.03, sigma=0.5)"
    jitter_ms 10.0
    loss 0.02
    bandwidth_mbps 0.25
  ]
  edge [
    source 6
    target 9
    latency "lognormal(median=0.03, sigma=0.5)"
    jitter_ms 10.0
    loss 0.02
    bandwidth_mbps 0.25
  ]
  edge [
    source 6
    target 10
    latency "lognormal(median=0.03, sigma=0.5)"
    jitter_ms 10.0
    loss 0.02
    bandwidth_mbps 0.25
  ]
]
