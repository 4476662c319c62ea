//! MQTT notifications: shoutrrr's `mqtt://` and `mqtts://` URLs; the message is published
//! to one topic (QoS 0, 1 or 2, optionally retained) and the broker's acknowledgement is
//! awaited.

use std::sync::Arc;
use std::time::Duration;

use rumqttc::{
    AsyncClient, Event, MqttOptions, Outgoing, Packet, QoS, TlsConfiguration, Transport,
};

use super::{Message, Parts};

pub struct Mqtt {
    host: String,
    port: u16,
    topic: String,
    credentials: Option<(String, String)>,
    tls: bool,
    qos: QoS,
    retained: bool,
    client_id: String,
    clean_session: bool,
}

pub(super) fn parse(p: &mut Parts) -> Result<Mqtt, String> {
    p.require_host("the broker")?;
    let topic = p.segments.join("/");
    if topic.is_empty() {
        return Err("the topic is missing (mqtt://[user:password@]host[:port]/TOPIC)".into());
    }
    let tls = p.scheme == "mqtts" && !p.options.bool(&["disabletls"], false)?;
    if p.options.bool(&["disabletlsverification"], false)? {
        return Err(
            "option disabletlsverification is not supported: give the broker's CA \
                    in NOTIFICATION_CA_CERT instead"
                .into(),
        );
    }
    let qos = match p.options.number::<u8>(&["qos"])?.unwrap_or(0) {
        0 => QoS::AtMostOnce,
        1 => QoS::AtLeastOnce,
        2 => QoS::ExactlyOnce,
        other => return Err(format!("option qos={other}: expected 0, 1 or 2")),
    };
    let credentials =
        (!p.user.is_empty()).then(|| (p.user.clone(), p.password.clone().unwrap_or_default()));
    Ok(Mqtt {
        host: p.host.clone(),
        port: p.port.unwrap_or(if tls { 8883 } else { 1883 }),
        topic,
        credentials,
        tls,
        qos,
        retained: p.options.bool(&["retained"], false)?,
        client_id: p
            .options
            .take(&["clientid"])
            .filter(|c| !c.is_empty())
            .unwrap_or_else(|| format!("dunnage-{:08x}", fastrand::u32(..))),
        clean_session: p.options.bool(&["cleansession"], true)?,
    })
}

/// TLS with the system's roots and `NOTIFICATION_CA_CERT`'s.
fn tls(ca_cert: Option<&str>) -> Result<TlsConfiguration, String> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    crate::net::tls::install_provider();
    let extra: Vec<CertificateDer<'static>> = match ca_cert {
        Some(pem) => CertificateDer::pem_slice_iter(pem.as_bytes())
            .collect::<Result<_, _>>()
            .map_err(|e| format!("NOTIFICATION_CA_CERT: {e}"))?,
        None => Vec::new(),
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier =
        rustls_platform_verifier::Verifier::new_with_extra_roots(extra, provider.clone())
            .map_err(|e| e.to_string())?;
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    Ok(TlsConfiguration::Rustls(Arc::new(config)))
}

impl Mqtt {
    /// Connects, publishes `msg` and waits for the broker's acknowledgement (for QoS 0,
    /// until the message is written), then disconnects.
    pub async fn publish(
        &self,
        msg: &Message,
        ca_cert: Option<&str>,
        timeout: Duration,
    ) -> Result<(), String> {
        let mut options = MqttOptions::new(&self.client_id, &self.host, self.port);
        options
            .set_keep_alive(Duration::from_secs(30))
            .set_clean_session(self.clean_session);
        if let Some((user, password)) = &self.credentials {
            options.set_credentials(user, password);
        }
        if self.tls {
            options.set_transport(Transport::Tls(tls(ca_cert)?));
        }
        let (client, mut events) = AsyncClient::new(options, 10);
        let payload = if msg.title.is_empty() {
            msg.body.clone()
        } else {
            format!("{}\n{}", msg.title, msg.body)
        };
        client
            .publish(&self.topic, self.qos, self.retained, payload)
            .await
            .map_err(|e| e.to_string())?;
        let qos = self.qos;
        let delivered = async {
            loop {
                let event = events.poll().await.map_err(|e| e.to_string())?;
                let done = matches!(
                    (qos, &event),
                    (QoS::AtMostOnce, Event::Outgoing(Outgoing::Publish(_)))
                        | (QoS::AtLeastOnce, Event::Incoming(Packet::PubAck(_)))
                        | (QoS::ExactlyOnce, Event::Incoming(Packet::PubComp(_)))
                );
                if done {
                    return Ok::<(), String>(());
                }
            }
        };
        tokio::time::timeout(timeout, delivered)
            .await
            .map_err(|_| format!("no answer from the broker within {}s", timeout.as_secs()))??;
        let _ = client.disconnect().await;
        // Let the DISCONNECT go out; the broker closes the connection.
        let _ = tokio::time::timeout(Duration::from_secs(2), async {
            while let Ok(event) = events.poll().await {
                if matches!(event, Event::Outgoing(Outgoing::Disconnect)) {
                    break;
                }
            }
        })
        .await;
        Ok(())
    }
}
