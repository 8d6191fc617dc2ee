//! AF_PACKET capture with a kernel BPF filter; pnet parses frames.
