"""Parses a Prometheus text exposition from stdin with prometheus_client
(independent of the gateway's exporter) and prints its samples as JSON:
{"families": {name: type}, "samples": [[name, labels, value], ...]}.
Exits 1 with the parser's message if the text does not parse."""
import json
import sys

from prometheus_client.parser import text_string_to_metric_families

try:
    families, samples = {}, []
    for fam in text_string_to_metric_families(sys.stdin.read()):
        families[fam.name] = fam.type
        for s in fam.samples:
            samples.append([s.name, s.labels, s.value])
except Exception as e:  # the parser raises ValueError and friends
    print(f"unparsable: {e}", file=sys.stderr)
    sys.exit(1)
print(json.dumps({"families": families, "samples": samples}))
