//! E-mail over SMTP (`smtp://` URLs, and the deprecated `EMAIL_*` variables mapped onto one),
//! sent with `lettre` over rustls.
//!
//! Encryption, as shoutrrr names it: `ImplicitTLS` (TLS from the first byte, port 465),
//! `ExplicitTLS` (STARTTLS, required), `None` (plain, STARTTLS only if `usestarttls` and the
//! server offers it) and `Auto`, the default: implicit TLS on port 465, otherwise STARTTLS,
//! required when a password would be sent, opportunistic when not.

use std::time::Duration;

use lettre::message::header::ContentType;
use lettre::message::{Mailbox, MultiPart};
use lettre::transport::smtp::authentication::{Credentials, Mechanism};
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::transport::smtp::extension::ClientId;
use lettre::{Address, AsyncSmtpTransport, AsyncTransport, Tokio1Executor};

use super::Message;
use super::address::Parts;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encryption {
    None,
    ExplicitTls,
    ImplicitTls,
    Auto,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Auth {
    None,
    Plain,
    Login,
    OAuth2,
    /// Unset: PLAIN or LOGIN when a user is given, none otherwise.
    Unknown,
}

/// One `smtp://` URL.
pub struct Smtp {
    pub host: String,
    pub port: u16,
    pub username: String,
    pub password: String,
    pub from: Mailbox,
    pub to: Vec<Mailbox>,
    /// Replaces the title as the subject.
    pub subject: Option<String>,
    pub encryption: Encryption,
    pub auth: Auth,
    pub use_starttls: bool,
    pub use_html: bool,
    /// The name sent with EHLO (`clienthost`; `auto` is this machine's host name).
    pub client_host: String,
}

impl Smtp {
    pub fn from_parts(p: &mut Parts) -> Result<Smtp, String> {
        p.require_host("the mail server")?;
        let o = &mut p.options;
        let from_address = o
            .take(&["fromaddress", "from"])
            .filter(|v| !v.is_empty())
            .ok_or("the from option (sender address) is required")?;
        let from_name = o.take(&["fromname"]).filter(|v| !v.is_empty());
        let from = mailbox(&from_address, from_name)?;
        let to = o
            .list(&["toaddresses", "to"], ',')
            .iter()
            .map(|a| mailbox(a, None))
            .collect::<Result<Vec<_>, _>>()?;
        if to.is_empty() {
            return Err("the to option (recipient addresses) is required".into());
        }
        let encryption = match o
            .string(&["encryption"], "auto")
            .to_ascii_lowercase()
            .as_str()
        {
            "none" => Encryption::None,
            "explicittls" => Encryption::ExplicitTls,
            "implicittls" => Encryption::ImplicitTls,
            "auto" => Encryption::Auto,
            other => {
                return Err(format!(
                    "option encryption={other:?}: expected None, ExplicitTLS, ImplicitTLS or Auto"
                ));
            }
        };
        let auth = match o.string(&["auth"], "unknown").to_ascii_lowercase().as_str() {
            "none" => Auth::None,
            "plain" => Auth::Plain,
            "login" => Auth::Login,
            "oauth2" => Auth::OAuth2,
            "unknown" => Auth::Unknown,
            "crammd5" => {
                return Err(
                    "option auth=CRAMMD5 is not supported (it needs the password stored in \
                     clear on the server); use Plain or Login over TLS"
                        .into(),
                );
            }
            other => {
                return Err(format!(
                    "option auth={other:?}: expected None, Plain, Login, OAuth2 or Unknown"
                ));
            }
        };
        let client_host = match o.string(&["clienthost"], "localhost") {
            h if h == "auto" => nix::unistd::gethostname()
                .ok()
                .and_then(|h| h.into_string().ok())
                .unwrap_or_else(|| "localhost".into()),
            h => h,
        };
        let subject = o.take(&["subject"]).filter(|s| !s.is_empty());
        let use_starttls = o.bool(&["usestarttls", "starttls"], true)?;
        let use_html = o.bool(&["usehtml"], false)?;
        // shoutrrr's skiptlsverify is refused rather than honoured: use NOTIFICATION_CA_CERT.
        if o.take(&["skiptlsverify"]).is_some() {
            return Err(
                "option skiptlsverify is not supported; trust a private CA with \
                 NOTIFICATION_CA_CERT instead"
                    .into(),
            );
        }
        Ok(Smtp {
            host: p.host.clone(),
            port: p.port.unwrap_or(25),
            username: p.user.clone(),
            password: p.password.clone().unwrap_or_default(),
            from,
            to,
            subject,
            encryption,
            auth,
            use_starttls,
            use_html,
            client_host,
        })
    }

    /// Whether TLS starts with the connection.
    fn implicit(&self) -> bool {
        match self.encryption {
            Encryption::ImplicitTls => true,
            Encryption::Auto => self.port == 465,
            Encryption::None | Encryption::ExplicitTls => false,
        }
    }

    fn mechanisms(&self) -> Option<Vec<Mechanism>> {
        match self.auth {
            Auth::None => None,
            Auth::Plain => Some(vec![Mechanism::Plain]),
            Auth::Login => Some(vec![Mechanism::Login]),
            Auth::OAuth2 => Some(vec![Mechanism::Xoauth2]),
            Auth::Unknown if self.username.is_empty() => None,
            Auth::Unknown => Some(vec![Mechanism::Plain, Mechanism::Login]),
        }
    }

    /// Sends `msg` to every recipient in one transaction.
    pub async fn send(
        &self,
        msg: &Message,
        extra_ca: Option<&str>,
        timeout: Duration,
    ) -> Result<(), String> {
        let tls = {
            let mut params = TlsParameters::builder(self.host.clone());
            if let Some(pem) = extra_ca {
                let cert = Certificate::from_pem(pem.as_bytes()).map_err(|e| e.to_string())?;
                params = params.add_root_certificate(cert);
            }
            let params = params
                .build_rustls()
                .map_err(|e| format!("TLS set-up failed: {e}"))?;
            let mechanisms = self.mechanisms();
            if self.implicit() {
                Tls::Wrapper(params)
            } else {
                match self.encryption {
                    Encryption::ExplicitTls => Tls::Required(params),
                    Encryption::None if !self.use_starttls => Tls::None,
                    Encryption::None => Tls::Opportunistic(params),
                    // Auto: a password never crosses the network in clear.
                    _ if mechanisms.is_some() => Tls::Required(params),
                    _ if self.use_starttls => Tls::Opportunistic(params),
                    _ => Tls::None,
                }
            }
        };
        let mut transport = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&self.host)
            .port(self.port)
            .tls(tls)
            .hello_name(ClientId::Domain(self.client_host.clone()))
            .timeout(Some(timeout));
        if let Some(mechanisms) = self.mechanisms() {
            transport = transport
                .credentials(Credentials::new(
                    self.username.clone(),
                    self.password.clone(),
                ))
                .authentication(mechanisms);
        }
        let transport = transport.build();
        let mut builder = lettre::Message::builder()
            .from(self.from.clone())
            .subject(self.subject.clone().unwrap_or_else(|| msg.title.clone()))
            .user_agent("dunnage".into());
        for to in &self.to {
            builder = builder.to(to.clone());
        }
        let email = if self.use_html {
            builder.multipart(MultiPart::alternative_plain_html(
                msg.body.clone(),
                msg.body.clone(),
            ))
        } else {
            builder
                .header(ContentType::TEXT_PLAIN)
                .body(msg.body.clone())
        }
        .map_err(|e| format!("cannot build the message: {e}"))?;
        transport
            .send(email)
            .await
            .map(|_| ())
            .map_err(|e| crate::net::error_chain(&e))
    }
}

fn mailbox(address: &str, name: Option<String>) -> Result<Mailbox, String> {
    let address: Address = address
        .trim()
        .parse()
        .map_err(|e| format!("{address:?} is not an e-mail address: {e}"))?;
    Ok(Mailbox::new(name, address))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn smtp(url: &str) -> Result<Smtp, String> {
        let mut parts = Parts::parse(url).unwrap();
        let s = Smtp::from_parts(&mut parts)?;
        parts.options.finish()?;
        Ok(s)
    }

    #[test]
    fn fields_defaults_and_aliases() {
        let s = smtp("smtp://user:p%40ss@mail.example:587/?from=backup@example.org&fromname=Backups&to=a@example.org,b@example.org").unwrap();
        assert_eq!((s.host.as_str(), s.port), ("mail.example", 587));
        assert_eq!(s.password, "p@ss");
        assert_eq!(s.to.len(), 2);
        assert_eq!(s.from.to_string(), "Backups <backup@example.org>");
        assert_eq!(s.encryption, Encryption::Auto);
        assert!(!s.implicit());
        assert_eq!(
            s.mechanisms(),
            Some(vec![Mechanism::Plain, Mechanism::Login])
        );
        let s = smtp("smtp://mail.example:465/?fromaddress=a@b.c&toaddresses=d@e.f").unwrap();
        assert!(s.implicit());
        assert_eq!(s.mechanisms(), None);
        assert_eq!(smtp("smtp://m/?from=a@b.c&to=d@e.f").unwrap().port, 25);
    }

    #[test]
    fn bad_fields_are_refused_with_the_reason() {
        let e = smtp("smtp://m/?to=d@e.f").err().unwrap();
        assert!(e.contains("from option"), "{e}");
        let e = smtp("smtp://m/?from=a@b.c").err().unwrap();
        assert!(e.contains("to option"), "{e}");
        let e = smtp("smtp://m/?from=a@b.c&to=not-an-address")
            .err()
            .unwrap();
        assert!(e.contains("not an e-mail address"), "{e}");
        let e = smtp("smtp://m/?from=a@b.c&to=d@e.f&encryption=tls")
            .err()
            .unwrap();
        assert!(e.contains("ExplicitTLS"), "{e}");
        assert!(smtp("smtp://m/?from=a@b.c&to=d@e.f&auth=CRAMMD5").is_err());
    }
}
