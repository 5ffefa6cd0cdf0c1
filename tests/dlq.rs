//! The DLQ writer against an unreachable broker: the failure is reported (so the load
//! stage retries and commits nothing) rather than the dead letters being dropped.

use floe::config::KafkaConfig;
use floe::dlq::{Category, DeadLetter, DlqError, DlqWriter, Origin};
use floe_e2e::free_port;
use std::time::Duration;

#[test]
fn an_unreachable_dlq_is_an_error_not_a_silent_drop() {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let kafka = KafkaConfig {
        brokers: format!("127.0.0.1:{}", free_port()),
        ..KafkaConfig::default()
    };
    let writer = DlqWriter::connect(
        &kafka,
        "floe.dlq",
        Duration::from_millis(500),
        runtime.handle().clone(),
    )
    .expect("a producer is created without a connection");
    let letter = DeadLetter {
        destination: None,
        origin: Origin {
            topic: "t".into(),
            partition: 0,
            offset: 7,
            key: Some(b"{\"id\":1}".to_vec()),
            value: Some(b"{}".to_vec()),
        },
        category: Category::Decode,
        reason: "test".into(),
        code: None,
        table: None,
        validator: None,
    };
    let err = writer
        .send_all(&[letter])
        .expect_err("nothing acknowledged it");
    assert!(matches!(err, DlqError::Deliver { count: 1, .. }), "{err}");
    assert!(err.to_string().contains("floe.dlq"), "{err}");
}
