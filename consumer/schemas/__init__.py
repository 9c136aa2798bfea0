"""Events written through a Schema Registry (Avro, Protobuf, JSON Schema in the Confluent wire
format), decoded into the JSON value the rules read.

Data flow: `wire` (is it the wire format, which schema id) -> `registry` (the schema by id, with
failures sorted into the registry's fault and the event's) -> `decoder` (confluent-kafka's own
deserializers, then `to_json`) -> the event. `shapes` turns a schema into the JSON shape its
records decode to, for `rules check --schema-registry`.
"""
