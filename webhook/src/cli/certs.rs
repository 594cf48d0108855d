//! `wi-webhook certs generate`: a CA and a serving certificate (plus, on request, a client
//! certificate and a token-signing key) written to a directory, for installs without
//! cert-manager and for the test control plane. Prints the base64 caBundle on stdout.

use std::net::IpAddr;
use std::path::PathBuf;

use anyhow::{Context, bail};
use wi_certs::{Ca, write_file, write_pair};

#[derive(clap::Args, Debug)]
pub struct CertsArgs {
    #[command(subcommand)]
    pub command: CertsCommand,
}

#[derive(clap::Subcommand, Debug)]
pub enum CertsCommand {
    /// Write ca.crt, ca.key, tls.crt and tls.key (key files mode 0600) into --out, and print
    /// the base64 of ca.crt (the webhook configuration's caBundle) on stdout.
    Generate(GenerateArgs),
}

#[derive(clap::Args, Debug)]
pub struct GenerateArgs {
    /// DNS name of the serving certificate (repeatable), e.g.
    /// wi-webhook.wi-system.svc.
    #[arg(long = "dns", value_name = "NAME")]
    pub dns: Vec<String>,

    /// IP address of the serving certificate (repeatable), e.g. 127.0.0.1.
    #[arg(long = "ip", value_name = "ADDR")]
    pub ip: Vec<IpAddr>,

    /// Directory to write the files into (created if missing).
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,

    /// Lifetime of the serving (and client) certificate, in days.
    #[arg(long, value_name = "N", default_value_t = wi_certs::DEFAULT_DAYS,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub days: u32,

    /// Lifetime of a new CA, in days. Longer than the serving certificate, so renewing that
    /// does not change the caBundle.
    #[arg(long, value_name = "N", default_value_t = wi_certs::DEFAULT_CA_DAYS,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub ca_days: u32,

    /// Sign with the existing CA in DIR (ca.crt and ca.key) instead of creating one. Its
    /// ca.crt is copied into --out; its key is not.
    #[arg(long, value_name = "DIR")]
    pub ca_dir: Option<PathBuf>,

    /// Also write client.crt and client.key: a client certificate with this common name
    /// (the Kubernetes user name).
    #[arg(long, value_name = "CN")]
    pub client_cn: Option<String>,

    /// Organization of the client certificate (the Kubernetes group), e.g. system:masters.
    #[arg(long, value_name = "ORG", requires = "client_cn")]
    pub client_org: Option<String>,

    /// Also write sa.key and sa.pub: an ECDSA P-256 key pair for the API server to sign
    /// service-account tokens with (test control plane).
    #[arg(long)]
    pub sa_key: bool,
}

pub fn run(args: CertsArgs) -> anyhow::Result<()> {
    match args.command {
        CertsCommand::Generate(args) => generate(args),
    }
}

fn generate(args: GenerateArgs) -> anyhow::Result<()> {
    if args.dns.is_empty() && args.ip.is_empty() {
        bail!("give at least one --dns NAME or --ip ADDR for the serving certificate");
    }
    let not_before = wi_certs::default_not_before();
    let out = &args.out;
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;

    let ca = match &args.ca_dir {
        // A reused CA: copy its certificate next to the leaf, leave its key where it is.
        Some(dir) => {
            let ca = Ca::from_dir(dir)
                .with_context(|| format!("loading the CA from {}", dir.display()))?;
            write_file(&out.join(wi_certs::CA_CERT_FILE), &ca.pem().cert, 0o644)?;
            ca
        }
        None => {
            let ca = Ca::generate(not_before, args.ca_days)?;
            write_pair(out, wi_certs::CA_CERT_FILE, wi_certs::CA_KEY_FILE, ca.pem())?;
            ca
        }
    };

    let serving = ca.issue_serving(&args.dns, &args.ip, not_before, args.days)?;
    write_pair(
        out,
        wi_certs::TLS_CERT_FILE,
        wi_certs::TLS_KEY_FILE,
        &serving,
    )?;

    if let Some(cn) = &args.client_cn {
        let client = ca.issue_client(cn, args.client_org.as_deref(), not_before, args.days)?;
        write_pair(out, "client.crt", "client.key", &client)?;
    }
    if args.sa_key {
        let (private, public) = wi_certs::generate_signing_key()?;
        write_file(&out.join("sa.pub"), &public, 0o644)?;
        write_file(&out.join("sa.key"), &private, 0o600)?;
    }

    // Fail here rather than at `serve` if something above produced an unusable pair.
    wi_certs::load_pair(
        &out.join(wi_certs::TLS_CERT_FILE),
        &out.join(wi_certs::TLS_KEY_FILE),
    )?;
    eprintln!("wrote certificates to {}", out.display());
    println!("{}", wi_certs::ca_bundle(&ca.pem().cert));
    Ok(())
}
