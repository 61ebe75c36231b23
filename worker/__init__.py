"""worker: Kafka consumer that runs map-reduce summarization of long documents through Triton."""
