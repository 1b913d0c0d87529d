//! MQTT packets in either version, as the client needs them: what it writes (CONNECT,
//! SUBSCRIBE, acknowledgements, PUBLISH) and what it reads, as one [`Incoming`] for 3.1.1
//! and 5. The codec is `rumqttc::mqttbytes` (`v4` and `v5`); PUBLISH alone is written by
//! hand, into the connection's write buffer, with the MQTT 5 properties encoded once per
//! client.

use bytes::{BufMut, Bytes, BytesMut};
use maestro_protocol::sut::{MqttOptions, MqttVersion};
use rumqttc::mqttbytes::v4;
use rumqttc::v5::mqttbytes::v5;

/// The largest packet read.
pub(super) const MAX_PACKET: usize = 16 << 20;

/// A packet from the broker.
#[derive(Debug)]
pub(super) enum Incoming {
    ConnAck(ConnAck),
    /// The subscription was granted, or refused with this reason.
    SubAck(Result<(), String>),
    /// PUBACK (QoS 1) or PUBCOMP (QoS 2): the publish `pkid` is done; `reason` is the MQTT 5
    /// reason when it is not plain success.
    Done {
        pkid: u16,
        reason: Option<Reason>,
    },
    /// PUBREC (QoS 2): answer with PUBREL unless it refused the message.
    Received {
        pkid: u16,
        reason: Option<Reason>,
    },
    /// PUBREL of a QoS 2 message the broker sent: answer with PUBCOMP.
    Release {
        pkid: u16,
    },
    Publish {
        qos: u8,
        pkid: u16,
        payload: Bytes,
    },
    PingResp,
    /// The broker ends the session (MQTT 5: with a reason).
    Disconnect(Option<Reason>),
    Other,
}

/// A CONNACK.
#[derive(Debug)]
pub(super) struct ConnAck {
    /// Why the broker refused the connection (`None`: accepted).
    pub refused: Option<(Refusal, String)>,
    /// MQTT 5: the most topic aliases the broker takes (0: none).
    pub topic_alias_max: u16,
    /// MQTT 5: the most QoS 1/2 publishes in flight the broker takes.
    pub receive_max: Option<u16>,
}

/// What a refused CONNACK means to the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Refusal {
    Auth,
    Other,
}

/// An MQTT 5 reason code that is not plain success, named by its packet and reason
/// (`PUBACK NoMatchingSubscribers`). `failed` is true for codes 0x80 and up (the packet's
/// request was refused).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Reason {
    pub packet: &'static str,
    /// Its index in the codec's enum: a cheap key for counting.
    pub key: u8,
    pub failed: bool,
    reason: ReasonName,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum ReasonName {
    PubAck(v5::PubAckReason),
    PubRec(v5::PubRecReason),
    PubComp(v5::PubCompReason),
    Disconnect(v5::DisconnectReasonCode),
}

impl Reason {
    /// `PUBACK NoMatchingSubscribers`.
    pub fn name(&self) -> String {
        let reason = match &self.reason {
            ReasonName::PubAck(r) => format!("{r:?}"),
            ReasonName::PubRec(r) => format!("{r:?}"),
            ReasonName::PubComp(r) => format!("{r:?}"),
            ReasonName::Disconnect(r) => format!("{r:?}"),
        };
        format!("{} {reason}", self.packet)
    }
}

fn puback_reason(r: v5::PubAckReason) -> Option<Reason> {
    use v5::PubAckReason as R;
    (r != R::Success).then_some(Reason {
        packet: "PUBACK",
        key: r as u8,
        failed: r != R::NoMatchingSubscribers,
        reason: ReasonName::PubAck(r),
    })
}

fn pubrec_reason(r: v5::PubRecReason) -> Option<Reason> {
    use v5::PubRecReason as R;
    (r != R::Success).then_some(Reason {
        packet: "PUBREC",
        key: r as u8,
        failed: r != R::NoMatchingSubscribers,
        reason: ReasonName::PubRec(r),
    })
}

fn pubcomp_reason(r: v5::PubCompReason) -> Option<Reason> {
    (r != v5::PubCompReason::Success).then_some(Reason {
        packet: "PUBCOMP",
        key: r as u8,
        failed: true,
        reason: ReasonName::PubComp(r),
    })
}

/// Reads the next whole packet from `buf` (`None`: more bytes are needed).
pub(super) fn read(version: MqttVersion, buf: &mut BytesMut) -> Result<Option<Incoming>, String> {
    match version {
        MqttVersion::V311 => match v4::Packet::read(buf, MAX_PACKET) {
            Ok(p) => Ok(Some(from_v4(p))),
            Err(rumqttc::mqttbytes::Error::InsufficientBytes(_)) => Ok(None),
            Err(e) => Err(format!("bad MQTT packet: {e}")),
        },
        // A DISCONNECT without a reason code is a normal one, which the codec does not
        // take (it wants a body for every packet but pings).
        MqttVersion::V5 if buf.starts_with(&[0xE0, 0]) => {
            let _ = buf.split_to(2);
            Ok(Some(Incoming::Disconnect(None)))
        }
        MqttVersion::V5 => match v5::Packet::read(buf, Some(MAX_PACKET as u32)) {
            Ok(p) => Ok(Some(from_v5(p))),
            Err(rumqttc::v5::mqttbytes::Error::InsufficientBytes(_)) => Ok(None),
            Err(e) => Err(format!("bad MQTT 5 packet: {e}")),
        },
    }
}

fn from_v4(p: v4::Packet) -> Incoming {
    match p {
        v4::Packet::ConnAck(a) => Incoming::ConnAck(ConnAck {
            refused: match a.code {
                v4::ConnectReturnCode::Success => None,
                code @ (v4::ConnectReturnCode::BadUserNamePassword
                | v4::ConnectReturnCode::NotAuthorized) => {
                    Some((Refusal::Auth, format!("{code:?}")))
                }
                code => Some((Refusal::Other, format!("{code:?}"))),
            },
            topic_alias_max: 0,
            receive_max: None,
        }),
        v4::Packet::SubAck(a) => Incoming::SubAck(
            if a.return_codes.contains(&v4::SubscribeReasonCode::Failure) {
                Err("Failure".into())
            } else {
                Ok(())
            },
        ),
        v4::Packet::PubAck(a) => Incoming::Done {
            pkid: a.pkid,
            reason: None,
        },
        v4::Packet::PubComp(a) => Incoming::Done {
            pkid: a.pkid,
            reason: None,
        },
        v4::Packet::PubRec(a) => Incoming::Received {
            pkid: a.pkid,
            reason: None,
        },
        v4::Packet::PubRel(a) => Incoming::Release { pkid: a.pkid },
        v4::Packet::Publish(p) => Incoming::Publish {
            qos: p.qos as u8,
            pkid: p.pkid,
            payload: p.payload,
        },
        v4::Packet::PingResp => Incoming::PingResp,
        v4::Packet::Disconnect => Incoming::Disconnect(None),
        _ => Incoming::Other,
    }
}

fn from_v5(p: v5::Packet) -> Incoming {
    match p {
        v5::Packet::ConnAck(a) => {
            let (topic_alias_max, receive_max, why) = match a.properties {
                Some(p) => (
                    p.topic_alias_max.unwrap_or(0),
                    p.receive_max,
                    p.reason_string,
                ),
                None => (0, None, None),
            };
            Incoming::ConnAck(ConnAck {
                refused: match a.code {
                    v5::ConnectReturnCode::Success => None,
                    code @ (v5::ConnectReturnCode::BadUserNamePassword
                    | v5::ConnectReturnCode::NotAuthorized
                    | v5::ConnectReturnCode::Banned
                    | v5::ConnectReturnCode::BadAuthenticationMethod) => {
                        Some((Refusal::Auth, format!("{code:?}")))
                    }
                    code => Some((
                        Refusal::Other,
                        match why {
                            Some(why) => format!("{code:?}: {why}"),
                            None => format!("{code:?}"),
                        },
                    )),
                },
                topic_alias_max,
                receive_max,
            })
        }
        v5::Packet::SubAck(a) => Incoming::SubAck(
            match a
                .return_codes
                .iter()
                .find(|c| !matches!(c, v5::SubscribeReasonCode::Success(_)))
            {
                Some(code) => Err(format!("{code:?}")),
                None => Ok(()),
            },
        ),
        v5::Packet::PubAck(a) => Incoming::Done {
            pkid: a.pkid,
            reason: puback_reason(a.reason),
        },
        v5::Packet::PubComp(a) => Incoming::Done {
            pkid: a.pkid,
            reason: pubcomp_reason(a.reason),
        },
        v5::Packet::PubRec(a) => Incoming::Received {
            pkid: a.pkid,
            reason: pubrec_reason(a.reason),
        },
        v5::Packet::PubRel(a) => Incoming::Release { pkid: a.pkid },
        v5::Packet::Publish(p) => Incoming::Publish {
            qos: p.qos as u8,
            pkid: p.pkid,
            payload: p.payload,
        },
        v5::Packet::PingResp(_) => Incoming::PingResp,
        v5::Packet::Disconnect(d) => Incoming::Disconnect(Some(Reason {
            packet: "DISCONNECT",
            key: d.reason_code as u8,
            failed: d.reason_code as u8 >= 0x80,
            reason: ReasonName::Disconnect(d.reason_code),
        })),
        _ => Incoming::Other,
    }
}

fn v4_qos(qos: u8) -> rumqttc::QoS {
    match qos {
        0 => rumqttc::QoS::AtMostOnce,
        1 => rumqttc::QoS::AtLeastOnce,
        _ => rumqttc::QoS::ExactlyOnce,
    }
}

fn v5_qos(qos: u8) -> rumqttc::v5::mqttbytes::QoS {
    rumqttc::v5::mqttbytes::qos(qos.min(2)).unwrap_or_default()
}

/// What a client says at connect.
#[derive(Debug)]
pub(super) struct Hello<'a> {
    pub client_id: &'a str,
    pub keep_alive_s: u16,
    pub clean: bool,
    pub credentials: Option<&'a (String, String)>,
    /// MQTT 5: the session expiry interval.
    pub session_expiry_s: Option<u32>,
    /// MQTT 5: the most QoS 1/2 publishes the client takes at once.
    pub receive_maximum: Option<u16>,
}

/// Writes CONNECT.
pub(super) fn connect(version: MqttVersion, hello: &Hello<'_>, buf: &mut BytesMut) {
    // Only our own small packets are written this way: they always fit.
    match version {
        MqttVersion::V311 => {
            let mut c = v4::Connect::new(hello.client_id);
            c.keep_alive = hello.keep_alive_s;
            c.clean_session = hello.clean;
            if let Some((u, p)) = hello.credentials {
                c.set_login(u.clone(), p.clone());
            }
            let _ = v4::Packet::Connect(c).write(buf, MAX_PACKET);
        }
        MqttVersion::V5 => {
            let properties = (hello.session_expiry_s.is_some() || hello.receive_maximum.is_some())
                .then(|| v5::ConnectProperties {
                    session_expiry_interval: hello.session_expiry_s,
                    receive_maximum: hello.receive_maximum,
                    ..v5::ConnectProperties::new()
                });
            let c = v5::Connect {
                keep_alive: hello.keep_alive_s,
                client_id: hello.client_id.to_owned(),
                clean_start: hello.clean,
                properties,
            };
            let login = hello
                .credentials
                .map(|(u, p)| v5::Login::new(u.clone(), p.clone()));
            let _ = v5::Packet::Connect(c, None, login).write(buf, None);
        }
    }
}

/// Writes SUBSCRIBE of one filter.
pub(super) fn subscribe(version: MqttVersion, filter: &str, qos: u8, buf: &mut BytesMut) {
    match version {
        MqttVersion::V311 => {
            let mut s = v4::Subscribe::new(filter, v4_qos(qos));
            s.pkid = 1;
            let _ = v4::Packet::Subscribe(s).write(buf, MAX_PACKET);
        }
        MqttVersion::V5 => {
            let mut s = v5::Subscribe::new(v5::Filter::new(filter, v5_qos(qos)), None);
            s.pkid = 1;
            let _ = v5::Packet::Subscribe(s).write(buf, None);
        }
    }
}

/// An acknowledgement the client sends.
#[derive(Debug, Clone, Copy)]
pub(super) enum Ack {
    /// PUBACK (QoS 1 received).
    Puback,
    /// PUBREC (QoS 2 received).
    Pubrec,
    /// PUBREL (QoS 2 released).
    Pubrel,
    /// PUBCOMP (QoS 2 complete).
    Pubcomp,
}

/// Writes an acknowledgement of `pkid` (success: the same short form in both versions).
pub(super) fn ack(kind: Ack, pkid: u16, buf: &mut BytesMut) {
    let byte1 = match kind {
        Ack::Puback => 0x40,
        Ack::Pubrec => 0x50,
        Ack::Pubrel => 0x62,
        Ack::Pubcomp => 0x70,
    };
    buf.put_slice(&[byte1, 2]);
    buf.put_u16(pkid);
}

pub(super) fn ping(buf: &mut BytesMut) {
    buf.put_slice(&[0xC0, 0]);
}

/// DISCONNECT (MQTT 5: normal disconnection, the short form).
pub(super) fn disconnect(buf: &mut BytesMut) {
    buf.put_slice(&[0xE0, 0]);
}

/// How a producer's publishes are written: the MQTT 5 properties are encoded once.
#[derive(Debug, Clone)]
pub(super) struct PublishForm {
    pub version: MqttVersion,
    pub qos: u8,
    pub retain: bool,
    /// MQTT 5: the properties of every publish, length first (without a topic alias).
    properties: Bytes,
    /// The same with topic alias 1 (when aliases are asked for).
    aliased: Option<Bytes>,
}

impl PublishForm {
    pub fn new(o: &MqttOptions, qos: u8) -> Self {
        let mut form = PublishForm {
            version: o.version,
            qos,
            retain: o.retain,
            properties: Bytes::new(),
            aliased: None,
        };
        if o.version == MqttVersion::V5 {
            let props = v5::PublishProperties {
                message_expiry_interval: o.v5.message_expiry_s,
                response_topic: o.v5.response_topic.clone(),
                user_properties: o.v5.user_properties.clone(),
                content_type: o.v5.content_type.clone(),
                ..Default::default()
            };
            let encode = |p: &v5::PublishProperties| {
                let mut buf = BytesMut::new();
                let _ = p.write(&mut buf);
                buf.freeze()
            };
            form.properties = encode(&props);
            if o.v5.topic_alias {
                form.aliased = Some(encode(&v5::PublishProperties {
                    topic_alias: Some(1),
                    ..props
                }));
            }
        }
        form
    }

    /// True when publishes name their topic once and then use alias 1.
    pub fn aliases(&self) -> bool {
        self.aliased.is_some()
    }

    /// Writes one PUBLISH. `alias`: send topic alias 1 (`Some(true)`: with the topic,
    /// which sets the alias; `Some(false)`: without it).
    #[allow(clippy::too_many_arguments)] // the fields of one packet
    #[inline]
    pub fn put(
        &self,
        buf: &mut BytesMut,
        topic: &str,
        alias: Option<bool>,
        dup: bool,
        pkid: u16,
        payload: &[u8],
    ) {
        let topic = if alias == Some(false) { "" } else { topic };
        let properties: &[u8] = match (self.version, alias, &self.aliased) {
            (MqttVersion::V311, _, _) => &[],
            (MqttVersion::V5, Some(_), Some(aliased)) => aliased,
            (MqttVersion::V5, _, _) => &self.properties,
        };
        let qos = self.qos;
        let len = 2 + topic.len() + if qos > 0 { 2 } else { 0 } + properties.len() + payload.len();
        buf.reserve(len + 5);
        buf.put_u8(0x30 | (u8::from(dup) << 3) | (qos << 1) | u8::from(self.retain));
        let mut rest = len;
        loop {
            let mut byte = (rest % 128) as u8;
            rest /= 128;
            if rest > 0 {
                byte |= 0x80;
            }
            buf.put_u8(byte);
            if rest == 0 {
                break;
            }
        }
        buf.put_u16(topic.len() as u16);
        buf.put_slice(topic.as_bytes());
        if qos > 0 {
            buf.put_u16(pkid);
        }
        buf.put_slice(properties);
        buf.put_slice(payload);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use maestro_protocol::SutOptions;

    fn options(url: &str) -> MqttOptions {
        match maestro_protocol::SutUrl::parse(url).unwrap().options {
            SutOptions::Mqtt(o) => o,
            _ => panic!("not mqtt"),
        }
    }

    #[test]
    fn a_3_1_1_publish_is_what_mqttbytes_reads() {
        let form = PublishForm::new(&options("mqtt://h"), 1);
        let mut buf = BytesMut::new();
        form.put(&mut buf, "a/b", None, true, 9, &[7u8; 300]);
        let Ok(v4::Packet::Publish(p)) = v4::Packet::read(&mut buf, MAX_PACKET) else {
            panic!("not a publish")
        };
        assert_eq!((p.topic.as_str(), p.pkid, p.dup), ("a/b", 9, true));
        assert_eq!(p.payload.len(), 300);
        assert!(buf.is_empty());
    }

    #[test]
    fn a_5_publish_carries_its_properties_and_alias() {
        let o = options(
            "mqtt://h?version=5&user_properties=a:1&message_expiry=30s&content_type=text/plain\
             &response_topic=r&topic_alias=true",
        );
        let form = PublishForm::new(&o, 2);
        assert!(form.aliases());
        let mut buf = BytesMut::new();
        form.put(&mut buf, "a/b", Some(true), false, 3, b"hello");
        form.put(&mut buf, "a/b", Some(false), false, 4, b"again");
        for (topic, pkid, body) in [("a/b", 3, "hello"), ("", 4, "again")] {
            let Ok(v5::Packet::Publish(p)) = v5::Packet::read(&mut buf, None) else {
                panic!("not a publish")
            };
            let props = p.properties.unwrap();
            assert_eq!(
                (&p.topic[..], p.pkid, &p.payload[..]),
                (topic.as_bytes(), pkid, body.as_bytes())
            );
            assert_eq!(props.topic_alias, Some(1));
            assert_eq!(props.message_expiry_interval, Some(30));
            assert_eq!(props.content_type.as_deref(), Some("text/plain"));
            assert_eq!(props.response_topic.as_deref(), Some("r"));
            assert_eq!(props.user_properties, [("a".to_owned(), "1".to_owned())]);
        }
        assert!(buf.is_empty());
        // Without aliases: no alias property, the topic every time.
        let plain = PublishForm::new(&options("mqtt://h?version=5"), 0);
        plain.put(&mut buf, "t", None, false, 0, b"x");
        let Ok(v5::Packet::Publish(p)) = v5::Packet::read(&mut buf, None) else {
            panic!("not a publish")
        };
        assert_eq!((&p.topic[..], p.properties), (&b"t"[..], None));
    }

    #[test]
    fn acknowledgements_read_back_in_both_versions() {
        for version in [MqttVersion::V311, MqttVersion::V5] {
            let mut buf = BytesMut::new();
            ack(Ack::Puback, 5, &mut buf);
            ack(Ack::Pubrel, 6, &mut buf);
            ping(&mut buf);
            disconnect(&mut buf);
            let Ok(Some(Incoming::Done {
                pkid: 5,
                reason: None,
            })) = read(version, &mut buf)
            else {
                panic!("{version:?}: PUBACK")
            };
            let Ok(Some(Incoming::Release { pkid: 6 })) = read(version, &mut buf) else {
                panic!("{version:?}: PUBREL")
            };
            assert!(matches!(read(version, &mut buf), Ok(Some(Incoming::Other))));
            assert!(matches!(
                read(version, &mut buf),
                Ok(Some(Incoming::Disconnect(None)))
            ));
            assert!(matches!(read(version, &mut buf), Ok(None)));
        }
    }

    #[test]
    fn mqtt_5_reasons_are_named_and_failures_told_apart() {
        let mut buf = BytesMut::new();
        let _ = v5::Packet::PubAck(v5::PubAck {
            pkid: 1,
            reason: v5::PubAckReason::NoMatchingSubscribers,
            properties: None,
        })
        .write(&mut buf, None);
        let _ = v5::Packet::PubAck(v5::PubAck {
            pkid: 2,
            reason: v5::PubAckReason::QuotaExceeded,
            properties: None,
        })
        .write(&mut buf, None);
        let Ok(Some(Incoming::Done {
            reason: Some(first),
            ..
        })) = read(MqttVersion::V5, &mut buf)
        else {
            panic!("PUBACK 1")
        };
        assert_eq!(
            (first.name().as_str(), first.failed),
            ("PUBACK NoMatchingSubscribers", false)
        );
        let Ok(Some(Incoming::Done {
            reason: Some(second),
            ..
        })) = read(MqttVersion::V5, &mut buf)
        else {
            panic!("PUBACK 2")
        };
        assert_eq!(
            (second.name().as_str(), second.failed),
            ("PUBACK QuotaExceeded", true)
        );
    }
}
