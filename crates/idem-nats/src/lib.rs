//! NATS JetStream transport for idem-consumer (in progress).
