{
  "targets": [
    {
      "target_name": "splice_relay",
      "sources": ["src/native/splice-relay.c"],
      "cflags": ["-O2", "-Wall", "-Wextra", "-Wno-unused-parameter"],
      "conditions": [["OS!='linux'", {"type": "none", "sources": []}]]
    }
  ]
}
