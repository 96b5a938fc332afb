//! A corpus of secret shapes, and how to look for any fragment of them in text: what the
//! redaction tests (and every feature that emits text) check their outputs against.

use std::collections::HashSet;

/// The shortest piece of a secret that must not be kept.
const FRAGMENT: usize = 8;

/// One secret as it is placed in text, and the part of it that is secret (what must not leak; the
/// context around it, like `DB_PASSWORD=`, may stay).
pub struct Shape {
    pub name: &'static str,
    pub placed: String,
    pub secret: String,
}

/// `length` characters from `alphabet`, different for each `seed`, random-looking enough for the
/// redactor's checks on a real credential.
fn body(seed: usize, length: usize, alphabet: &[u8]) -> String {
    // xorshift64*, seeded per shape.
    let mut state = 0x9E37_79B9_7F4A_7C15_u64 ^ (seed as u64).wrapping_mul(0xA076_1D64_78BD_642F);
    (0..length)
        .map(|_| {
            state ^= state >> 12;
            state ^= state << 25;
            state ^= state >> 27;
            let value = state.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 33;
            alphabet[(value % alphabet.len() as u64) as usize] as char
        })
        .collect()
}

const ALNUM: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
const UPPER: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
const HEX: &[u8] = b"0123456789abcdef";
const BASE64: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
const BECH32: &[u8] = b"QPZRY9X8GF2TVDW0S3JN54KHCE6MUA7L";

pub fn base64(bytes: &[u8]) -> String {
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | (u32::from(*b) << (16 - 8 * i)));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(BASE64[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn pem(kind: &str, seed: usize) -> (String, String) {
    let lines: Vec<String> = (0..12).map(|i| body(seed * 100 + i, 64, BASE64)).collect();
    let key_body = lines.join("\n");
    (
        format!("-----BEGIN {kind}-----\n{key_body}\n-----END {kind}-----"),
        key_body,
    )
}

/// The corpus: at least 60 shapes, the 30 of the hostile test among them.
pub fn corpus() -> Vec<Shape> {
    let mut shapes = Vec::new();
    let mut add = |name: &'static str, placed: String, secret: String| {
        shapes.push(Shape {
            name,
            placed,
            secret,
        })
    };
    let s = |seed: usize, length: usize| body(seed, length, ALNUM);
    // A public prefix and the secret after it: the prefix alone is not looked for.
    let prefixed = |prefix: &str, secret: String| (format!("{prefix}{secret}"), secret);
    let keyed = |prefix: &str, secret: String| (format!("{prefix}{secret}"), secret);

    macro_rules! shape {
        ($name:expr, $pair:expr) => {{
            let (placed, secret) = $pair;
            add($name, placed, secret);
        }};
    }
    shape!("anthropic", prefixed("sk-ant-api03-", s(1, 90)));
    shape!("openai project", prefixed("sk-proj-", s(2, 48)));
    shape!("openai legacy", prefixed("sk-", s(3, 48)));
    shape!("aws access key id", prefixed("AKIA", body(4, 16, UPPER)));
    shape!("aws temporary key id", prefixed("ASIA", body(5, 16, UPPER)));
    shape!(
        "aws secret key",
        keyed("aws_secret_access_key = ", body(6, 40, BASE64))
    );
    shape!(
        "aws session token",
        keyed(
            "aws_session_token=",
            format!("IQoJb3JpZ2luX2Vj{}", body(7, 120, BASE64))
        )
    );
    shape!("github classic", prefixed("ghp_", s(8, 36)));
    shape!("github oauth", prefixed("gho_", s(9, 36)));
    shape!("github app", prefixed("ghs_", s(10, 36)));
    shape!("github fine-grained", prefixed("github_pat_", s(11, 82)));
    shape!("gitlab", prefixed("glpat-", s(12, 20)));
    shape!("stripe secret", prefixed("sk_live_", s(13, 24)));
    shape!("stripe restricted", prefixed("rk_live_", s(14, 24)));
    shape!("google api key", prefixed("AIza", s(15, 35)));
    shape!("npm", prefixed("npm_", s(16, 36)));
    shape!(
        "slack bot",
        prefixed("xoxb-1234567890-1234567890-", s(17, 24))
    );
    shape!(
        "slack user",
        prefixed("xoxp-1234567890-1234567890-", s(18, 24))
    );
    shape!(
        "slack webhook",
        prefixed(
            "https://hooks.slack.com/services/",
            format!(
                "T{}/B{}/{}",
                body(19, 8, UPPER),
                body(20, 10, UPPER),
                s(21, 24)
            )
        )
    );
    shape!(
        "discord webhook",
        prefixed(
            "https://discord.com/api/webhooks/123456789012345678/",
            s(22, 68)
        )
    );
    shape!(
        "jwt",
        prefixed(
            "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.",
            format!(
                "{}.{}",
                base64(format!("{{\"sub\":\"{}\",\"role\":\"admin\"}}", s(23, 20)).as_bytes())
                    .trim_end_matches('='),
                s(24, 43)
            )
        )
    );
    shape!(
        "basic auth header",
        keyed(
            "Authorization: Basic ",
            base64(format!("{}:{}", s(125, 8), s(25, 16)).as_bytes())
        )
    );
    shape!("bearer header", keyed("Authorization: Bearer ", s(26, 40)));
    shape!("bearer", keyed("curl -H 'x: Bearer ", s(27, 32)));
    shape!("api key header", keyed("x-api-key: ", s(28, 40)));
    shape!("postgres url", {
        let pw = s(29, 16);
        (format!("postgres://admin:{pw}@db:5432/app"), pw)
    });
    shape!("mysql url", {
        let pw = s(30, 16);
        (format!("mysql://root:{pw}@db:3306/app"), pw)
    });
    shape!("redis url", {
        let pw = s(31, 16);
        (format!("redis://:{pw}@cache:6379/0"), pw)
    });
    shape!("mongodb url", {
        let pw = s(32, 16);
        (
            format!("mongodb+srv://app:{pw}@cluster0.example.net/db"),
            pw,
        )
    });
    shape!("amqp url", {
        let pw = s(33, 16);
        (format!("amqp://guest:{pw}@rabbit:5672/"), pw)
    });
    shape!("https url", {
        let pw = s(34, 16);
        (format!("https://deploy:{pw}@git.example.com/app.git"), pw)
    });
    shape!("DB_PASSWORD", keyed("DB_PASSWORD=", s(35, 14)));
    shape!("POSTGRES_PASSWORD", keyed("POSTGRES_PASSWORD=", s(36, 14)));
    shape!(
        "MYSQL_ROOT_PASSWORD",
        keyed("MYSQL_ROOT_PASSWORD=", s(37, 14))
    );
    shape!("password=", keyed("password=", s(38, 12)));
    shape!("PGPASSWORD", keyed("PGPASSWORD=", s(39, 12)));
    shape!("REDIS_PASSWORD quoted", {
        let pw = s(40, 14);
        (format!("REDIS_PASSWORD='{pw}'"), pw)
    });
    shape!("json password", {
        let pw = format!("{} {}", s(41, 8), s(42, 8));
        (format!("{{\"password\": \"{pw}\"}}"), pw)
    });
    shape!("json api_key", {
        let key = s(43, 32);
        (format!("{{\"api_key\":\"{key}\"}}"), key)
    });
    shape!("yaml client_secret", keyed("client_secret: ", s(44, 32)));
    shape!("SECRET_KEY", keyed("SECRET_KEY=", s(45, 50)));
    shape!("export API_TOKEN", {
        let token = s(46, 32);
        (format!("export API_TOKEN=\"{token}\""), token)
    });
    shape!(
        "ANTHROPIC_API_KEY env",
        keyed("ANTHROPIC_API_KEY=", s(47, 40))
    );
    shape!("PRIVATE_KEY env", keyed("JWT_PRIVATE_KEY=", s(48, 40)));
    shape!("CREDENTIALS env", keyed("GOOGLE_CREDENTIALS=", s(49, 40)));
    shape!("--password", keyed("psql --password ", s(50, 14)));
    shape!("--password=", keyed("app --db-password=", s(51, 14)));
    shape!("--token", keyed("vault login --token ", s(52, 26)));
    shape!("mysql -p", {
        let pw = s(53, 12);
        (format!("mysql -uroot -p{pw} -h db app"), pw)
    });
    shape!("rsa private key", pem("RSA PRIVATE KEY", 54));
    shape!("openssh private key", pem("OPENSSH PRIVATE KEY", 55));
    shape!("ec private key", pem("EC PRIVATE KEY", 56));
    shape!("pkcs8 private key", pem("PRIVATE KEY", 57));
    shape!(
        "sendgrid",
        prefixed("SG.", format!("{}.{}", s(58, 22), s(59, 43)))
    );
    shape!("hugging face", prefixed("hf_", s(60, 34)));
    shape!("digitalocean", prefixed("dop_v1_", body(61, 64, HEX)));
    shape!(
        "azure storage",
        keyed("AccountKey=", format!("{}==", body(62, 86, BASE64)))
    );
    shape!("docker hub", prefixed("dckr_pat_", s(63, 27)));
    shape!("pypi", prefixed("pypi-AgEIcHlwaS5vcmc", s(64, 70)));
    shape!("shopify", prefixed("shpat_", body(65, 32, HEX)));
    shape!("databricks", prefixed("dapi", body(66, 32, HEX)));
    shape!(
        "age secret key",
        prefixed("AGE-SECRET-KEY-1", body(67, 58, BECH32))
    );
    shape!("linear", prefixed("lin_api_", s(68, 40)));
    shape!("telegram bot", prefixed("123456789:AA", s(69, 33)));
    shape!(
        "SLACK_SIGNING_SECRET",
        keyed("SLACK_SIGNING_SECRET=", body(70, 32, HEX))
    );
    shapes
}

/// Ordinary text that must stay readable.
pub const CONTROL: &[&str] = &[
    "PASSWORD_MIN_LENGTH=8",
    "commit 3f9a1c2b7d4e5f60718293a4b5c6d7e8f9012345",
    "request 123e4567-e89b-12d3-a456-426614174000 failed",
    "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg==",
    "the user forgot their password and asked for a reset",
    "POSTGRES_PASSWORD_FILE=/run/secrets/db",
    "Access denied for user 'root'@'localhost' (using password: YES)",
];

/// Every piece of `FRAGMENT` bytes of the secrets, to look for.
fn fragments(shapes: &[Shape]) -> HashSet<Vec<u8>> {
    shapes
        .iter()
        .flat_map(|shape| {
            shape
                .secret
                .as_bytes()
                .windows(FRAGMENT)
                .map(<[u8]>::to_vec)
                .collect::<Vec<_>>()
        })
        .collect()
}

/// The shapes any of whose fragments occur in `text`.
pub fn leaked<'a>(shapes: &'a [Shape], text: &str) -> Vec<&'a str> {
    let all = fragments(shapes);
    let found: HashSet<&[u8]> = text
        .as_bytes()
        .windows(FRAGMENT)
        .filter(|window| all.contains(*window))
        .collect();
    shapes
        .iter()
        .filter(|shape| {
            shape
                .secret
                .as_bytes()
                .windows(FRAGMENT)
                .any(|window| found.contains(window))
        })
        .map(|shape| shape.name)
        .collect()
}

pub fn assert_nothing_leaked(shapes: &[Shape], places: &[(String, String)]) {
    let mut leaks = Vec::new();
    for (place, text) in places {
        for name in leaked(shapes, text) {
            leaks.push(format!("{name} reached {place}"));
        }
    }
    assert!(leaks.is_empty(), "{}", leaks.join("\n"));
}
