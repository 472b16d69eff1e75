//! RabbitMQ transport for idem-consumer (in progress).
