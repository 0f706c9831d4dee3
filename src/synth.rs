//! `trailwatch synth`: a realistic synthetic CloudTrail corpus in S3's layout, and the exact report it must yield.
//!
//! The expected report (the oracle) is computed from what was generated — which principal, which IAM action, which
//! outcome — with plain full maps, not from parsing the output, so comparing it with `report identities` after a
//! replay checks the whole pipeline end to end.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use flate2::Compression;
use flate2::write::GzEncoder;

use crate::report::{AccessKeyReport, ActionReport, ConsoleLoginReport, IdentityReport};
use crate::time::{Timestamp, format_rfc3339, parse_rfc3339};

/// What to generate.
#[derive(Debug, Clone)]
pub struct SynthConfig {
    pub files: usize,
    pub records_per_file: usize,
    pub seed: u64,
    pub principals: usize,
    pub actions_per_principal: usize,
    /// Time of the first file's window.
    pub start: Timestamp,
    /// Background traffic that no built-in rule matches (no root, no sign-in without MFA, no denied calls, no
    /// security-relevant changes), plus one file of injected incidents, one or more per built-in rule, whose
    /// expected alerts are returned in [`SynthSummary::alerts`].
    pub incidents: bool,
}

impl Default for SynthConfig {
    fn default() -> Self {
        SynthConfig {
            files: 100,
            records_per_file: 1000,
            seed: 1,
            principals: 200,
            actions_per_principal: 12,
            start: parse_rfc3339("2026-10-01T00:00:00Z").expect("valid constant"),
            incidents: false,
        }
    }
}

/// What was generated.
#[derive(Debug, Default)]
pub struct SynthSummary {
    pub files: usize,
    pub records: u64,
    pub bytes: u64,
    pub json_bytes: u64,
    /// With `incidents`: the alerts a replay with the built-in rules must raise, sorted by rule and principal.
    pub alerts: Vec<ExpectedAlert>,
}

/// One alert the injected incidents must raise: its rule, principal and the CloudTrail event ids behind it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
pub struct ExpectedAlert {
    pub rule: String,
    pub principal: String,
    pub event_ids: Vec<String>,
}

/// Calls that built-in rules watch; left out of clean background traffic. (Launches are watched across regions,
/// and the background spreads every principal over every region at once.)
const WATCHED_CALLS: &[&str] =
    &["AuthorizeSecurityGroupIngress", "CreateAccessKey", "AttachRolePolicy", "SendCommand", "RunInstances"];

/// `(eventSource, eventName, IAM actions it maps to)`. The third column is written out by hand, independently of
/// `action.rs`, so the synth corpus checks that table too.
const CALLS: &[(&str, &str, &[&str])] = &[
    ("s3.amazonaws.com", "GetObject", &["s3:GetObject"]),
    ("s3.amazonaws.com", "HeadObject", &["s3:GetObject"]),
    ("s3.amazonaws.com", "PutObject", &["s3:PutObject"]),
    ("s3.amazonaws.com", "ListObjectsV2", &["s3:ListBucket"]),
    ("s3.amazonaws.com", "ListObjects", &["s3:ListBucket"]),
    ("s3.amazonaws.com", "HeadBucket", &["s3:ListBucket"]),
    ("s3.amazonaws.com", "ListBuckets", &["s3:ListAllMyBuckets"]),
    ("s3.amazonaws.com", "CopyObject", &["s3:PutObject", "s3:GetObject"]),
    ("s3.amazonaws.com", "DeleteObjects", &["s3:DeleteObject"]),
    ("s3.amazonaws.com", "GetBucketPolicy", &["s3:GetBucketPolicy"]),
    ("s3.amazonaws.com", "PutBucketEncryption", &["s3:PutEncryptionConfiguration"]),
    ("lambda.amazonaws.com", "ListFunctions20150331", &["lambda:ListFunctions"]),
    ("lambda.amazonaws.com", "GetFunction20150331v2", &["lambda:GetFunction"]),
    ("lambda.amazonaws.com", "UpdateFunctionCode20150331v2", &["lambda:UpdateFunctionCode"]),
    ("lambda.amazonaws.com", "Invoke", &["lambda:Invoke"]),
    ("monitoring.amazonaws.com", "PutMetricData", &["cloudwatch:PutMetricData"]),
    ("monitoring.amazonaws.com", "GetMetricData", &["cloudwatch:GetMetricData"]),
    ("email.amazonaws.com", "SendEmail", &["ses:SendEmail"]),
    ("ec2.amazonaws.com", "DescribeInstances", &["ec2:DescribeInstances"]),
    ("ec2.amazonaws.com", "RunInstances", &["ec2:RunInstances"]),
    ("ec2.amazonaws.com", "DescribeSecurityGroups", &["ec2:DescribeSecurityGroups"]),
    ("ec2.amazonaws.com", "AuthorizeSecurityGroupIngress", &["ec2:AuthorizeSecurityGroupIngress"]),
    ("ec2.amazonaws.com", "AssignIpv6Addresses", &["ec2:AssignIpv6Addresses"]),
    ("iam.amazonaws.com", "GetUser", &["iam:GetUser"]),
    ("iam.amazonaws.com", "ListRoles", &["iam:ListRoles"]),
    ("iam.amazonaws.com", "CreateAccessKey", &["iam:CreateAccessKey"]),
    ("iam.amazonaws.com", "AttachRolePolicy", &["iam:AttachRolePolicy"]),
    ("sts.amazonaws.com", "AssumeRole", &["sts:AssumeRole"]),
    ("sts.amazonaws.com", "GetCallerIdentity", &["sts:GetCallerIdentity"]),
    ("kms.amazonaws.com", "Decrypt", &["kms:Decrypt"]),
    ("kms.amazonaws.com", "GenerateDataKey", &["kms:GenerateDataKey"]),
    ("kms.amazonaws.com", "ReEncrypt", &["kms:ReEncryptFrom", "kms:ReEncryptTo"]),
    ("dynamodb.amazonaws.com", "DescribeTable", &["dynamodb:DescribeTable"]),
    ("dynamodb.amazonaws.com", "ListTables", &["dynamodb:ListTables"]),
    ("streams.dynamodb.amazonaws.com", "GetRecords", &["dynamodb:GetRecords"]),
    ("logs.amazonaws.com", "CreateLogStream", &["logs:CreateLogStream"]),
    ("logs.amazonaws.com", "DescribeLogGroups", &["logs:DescribeLogGroups"]),
    ("secretsmanager.amazonaws.com", "GetSecretValue", &["secretsmanager:GetSecretValue"]),
    ("ssm.amazonaws.com", "GetParameter", &["ssm:GetParameter"]),
    ("ssm.amazonaws.com", "SendCommand", &["ssm:SendCommand"]),
    ("cloudtrail.amazonaws.com", "LookupEvents", &["cloudtrail:LookupEvents"]),
    ("cloudtrail.amazonaws.com", "DescribeTrails", &["cloudtrail:DescribeTrails"]),
    ("ecr.amazonaws.com", "GetAuthorizationToken", &["ecr:GetAuthorizationToken"]),
    ("ecr.amazonaws.com", "BatchGetImage", &["ecr:BatchGetImage"]),
    ("sqs.amazonaws.com", "ReceiveMessage", &["sqs:ReceiveMessage"]),
    ("sns.amazonaws.com", "Publish", &["sns:Publish"]),
    ("tagging.amazonaws.com", "GetResources", &["tag:GetResources"]),
    ("cloudfront.amazonaws.com", "GetDistribution2020_05_31", &["cloudfront:GetDistribution"]),
    ("elasticloadbalancing.amazonaws.com", "DescribeLoadBalancers", &["elasticloadbalancing:DescribeLoadBalancers"]),
    ("rds.amazonaws.com", "DescribeDBInstances", &["rds:DescribeDBInstances"]),
    ("autoscaling.amazonaws.com", "DescribeAutoScalingGroups", &["autoscaling:DescribeAutoScalingGroups"]),
    ("config.amazonaws.com", "DescribeConfigRules", &["config:DescribeConfigRules"]),
    ("guardduty.amazonaws.com", "ListDetectors", &["guardduty:ListDetectors"]),
    ("route53.amazonaws.com", "ListHostedZones", &["route53:ListHostedZones"]),
    ("organizations.amazonaws.com", "DescribeOrganization", &["organizations:DescribeOrganization"]),
    ("athena.amazonaws.com", "StartQueryExecution", &["athena:StartQueryExecution"]),
    ("glue.amazonaws.com", "GetTable", &["glue:GetTable"]),
    ("ecs.amazonaws.com", "DescribeTasks", &["ecs:DescribeTasks"]),
    ("eks.amazonaws.com", "DescribeCluster", &["eks:DescribeCluster"]),
    ("states.amazonaws.com", "StartExecution", &["states:StartExecution"]),
];

const REGIONS: &[&str] = &["us-east-1", "eu-west-1", "us-west-2", "eu-central-1", "ap-southeast-2", "sa-east-1"];

const SERVICES: &[&str] = &[
    "ec2.amazonaws.com",
    "lambda.amazonaws.com",
    "cloudtrail.amazonaws.com",
    "config.amazonaws.com",
    "autoscaling.amazonaws.com",
    "elasticloadbalancing.amazonaws.com",
    "ecs-tasks.amazonaws.com",
    "ssm.amazonaws.com",
    "guardduty.amazonaws.com",
    "backup.amazonaws.com",
    "rds.amazonaws.com",
    "events.amazonaws.com",
];

const USER_AGENTS: &[&str] = &[
    "aws-cli/2.15.30 Python/3.11.8 Linux/6.1.79-99.167.amzn2023.x86_64 exe/x86_64.amzn.2023 prompt/off command/s3.ls",
    "Boto3/1.34.69 md/Botocore#1.34.69 ua/2.0 os/linux#6.1.0 md/arch#x86_64 lang/python#3.12.2 md/pyimpl#CPython cfg/retry-mode#legacy Botocore/1.34.69",
    "aws-sdk-go-v2/1.26.0 os/linux lang/go#1.22.1 md/GOOS#linux md/GOARCH#amd64 api/s3#1.53.0",
    "console.amazonaws.com",
    "aws-sdk-java/2.25.11 Linux/5.10.210-201.852.amzn2.x86_64 OpenJDK_64-Bit_Server_VM/17.0.10+7-LTS Java/17.0.10 vendor/Amazon.com_Inc. io/sync http/Apache cfg/retry-mode/legacy",
    "Terraform/1.7.5 (+https://www.terraform.io) terraform-provider-aws/5.42.0 aws-sdk-go-v2/1.26.0",
];

/// SplitMix64: tiny, fast and stable across crate versions, so a seed means the same corpus forever.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
    fn chance(&mut self, p: f64) -> bool {
        self.unit() < p
    }
    fn token(&mut self, len: usize, out: &mut String) {
        const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
        for _ in 0..len {
            out.push(ALPHABET[self.below(ALPHABET.len())] as char);
        }
    }
    fn uuid(&mut self, out: &mut String) {
        let (a, b) = (self.next(), self.next());
        let _ = write!(
            out,
            "{:08x}-{:04x}-4{:03x}-a{:03x}-{:012x}",
            a >> 32,
            (a >> 16) & 0xffff,
            a & 0xfff,
            b >> 52,
            b & 0xffff_ffff_ffff
        );
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Role,
    User,
    Root,
    Federated,
    Service,
    Saml,
    WebIdentity,
    IdentityCenter,
    Account,
}

struct Principal {
    kind: Kind,
    account: String,
    /// Role, user or federated name; service host; other account id.
    name: String,
    keys: Vec<String>,
    ips: [String; 2],
    agents: [usize; 2],
    calls: Vec<usize>,
}

impl Principal {
    /// The principal trailwatch must attribute this identity's events to, with its kind and account.
    fn expected_identity(&self) -> (String, &'static str, Option<String>) {
        let acct = &self.account;
        match self.kind {
            Kind::Role => (format!("arn:aws:iam::{acct}:role/app/{}", self.name), "Role", Some(acct.clone())),
            Kind::User => (format!("arn:aws:iam::{acct}:user/{}", self.name), "IAMUser", Some(acct.clone())),
            Kind::Root => (format!("arn:aws:iam::{acct}:root"), "Root", Some(acct.clone())),
            Kind::Federated => {
                (format!("arn:aws:iam::{acct}:user/{}-issuer", self.name), "IAMUser", Some(acct.clone()))
            }
            Kind::Service => (format!("service:{}", self.name), "AWSService", None),
            Kind::Saml => (format!("principal-id:SAMLIDP:{}", self.name), "SAMLUser", Some(acct.clone())),
            Kind::WebIdentity => {
                (format!("arn:aws:sts::{acct}:assumed-role/web/{}", self.name), "WebIdentityUser", Some(acct.clone()))
            }
            Kind::IdentityCenter => (format!("principal-id:u-{}", self.name), "IdentityCenterUser", Some(acct.clone())),
            Kind::Account => (format!("account:{}", self.name), "AWSAccount", Some(self.name.clone())),
        }
    }
}

/// The most distinct IAM actions one identity can be given.
pub fn max_actions() -> usize {
    let mut all: Vec<&str> = CALLS.iter().flat_map(|c| c.2.iter().copied()).collect();
    all.sort_unstable();
    all.dedup();
    all.len()
}

/// Calls, starting at `offset`, whose IAM actions are exactly `k` distinct actions (calls sharing an action with an
/// earlier pick, such as `HeadObject` after `GetObject`, are passed over), so that `--actions-per-principal` is
/// the number of principal-action pairs per identity.
fn pick_calls(offset: usize, k: usize) -> Vec<usize> {
    let mut picked = Vec::new();
    let mut actions: Vec<&str> = Vec::new();
    for j in 0..CALLS.len() {
        let call = (offset + j) % CALLS.len();
        let new = CALLS[call].2;
        if actions.len() + new.len() > k || new.iter().any(|a| actions.contains(a)) {
            continue;
        }
        actions.extend_from_slice(new);
        picked.push(call);
        if actions.len() == k {
            break;
        }
    }
    picked
}

fn account_id(idx: usize) -> String {
    format!("{:012}", 100_000_000_000u64 + idx as u64 * 7_919_113)
}

fn build_principals(cfg: &SynthConfig, rng: &mut Rng) -> (Vec<Principal>, usize) {
    let n_accounts = (cfg.principals / 200).clamp(1, 50);
    let mut services_used = 0;
    let mut principals = Vec::with_capacity(cfg.principals);
    let k = cfg.actions_per_principal.min(max_actions());
    for i in 0..cfg.principals {
        let account_idx = i % n_accounts;
        let slot = i % 20;
        let mut kind = match slot {
            0..=9 => Kind::Role,
            10..=14 => Kind::User,
            15 if i / 20 < n_accounts && !cfg.incidents => Kind::Root,
            15 => Kind::User,
            16 => Kind::Federated,
            17 if services_used < SERVICES.len() => Kind::Service,
            17 => Kind::Role,
            18 if (i / 20) % 3 == 0 => Kind::Saml,
            18 if (i / 20) % 3 == 1 => Kind::WebIdentity,
            18 => Kind::Account,
            _ => Kind::IdentityCenter,
        };
        let account_idx = if kind == Kind::Root { i / 20 } else { account_idx };
        let name = match kind {
            Kind::Service => {
                services_used += 1;
                SERVICES[services_used - 1].to_owned()
            }
            Kind::Account => account_id(10_000 + i),
            Kind::Role => format!("svc-{i}"),
            Kind::User => format!("user-{i}"),
            _ => format!("p{i}"),
        };
        if kind == Kind::Root && account_idx >= n_accounts {
            kind = Kind::User;
        }
        let keys = match kind {
            Kind::User => {
                let n = 1 + usize::from(rng.chance(0.3));
                (0..n)
                    .map(|_| {
                        let mut k = String::from("AKIA");
                        rng.token(16, &mut k);
                        k.make_ascii_uppercase();
                        k
                    })
                    .collect()
            }
            Kind::Root => vec![format!("AKIAROOT{:012}", account_idx)],
            _ => Vec::new(),
        };
        let ip = |rng: &mut Rng| {
            format!("{}.{}.{}.{}", [203, 198, 192][rng.below(3)], rng.below(256), rng.below(256), 1 + rng.below(254))
        };
        let ips = [ip(rng), ip(rng)];
        let agents = [rng.below(USER_AGENTS.len()), rng.below(USER_AGENTS.len())];
        let mut calls = pick_calls(rng.below(CALLS.len()), k);
        if cfg.incidents {
            calls.retain(|c| !WATCHED_CALLS.contains(&CALLS[*c].1));
            if calls.is_empty() {
                calls.push(0);
            }
        }
        principals.push(Principal { kind, account: account_id(account_idx), name, keys, ips, agents, calls });
    }
    (principals, n_accounts)
}

/// One generated event, as the oracle sees it.
struct Truth<'p> {
    principal: &'p Principal,
    time: Timestamp,
    call: Option<usize>,
    error: Option<&'static str>,
    console: Option<(bool, bool)>,
    service_event: bool,
    key: Option<&'p str>,
    session: Option<String>,
    ip: &'p str,
    region: &'static str,
    agent: &'static str,
}

/// Generates the corpus under `out` and returns the summary and the expected report, sorted by principal.
pub fn generate(out: &Path, cfg: &SynthConfig) -> std::io::Result<(SynthSummary, Vec<IdentityReport>)> {
    let mut rng = Rng(cfg.seed ^ 0x5eed_0000_7a11_3a7c);
    let (principals, n_accounts) = build_principals(cfg, &mut rng);
    let mut oracle = Oracle::default();
    let mut summary = SynthSummary::default();
    // Cover every (principal, call) pair first: prefix sums of each principal's number of calls.
    let mut cover_start = Vec::with_capacity(principals.len() + 1);
    cover_start.push(0usize);
    for p in &principals {
        cover_start.push(cover_start.last().unwrap() + p.calls.len());
    }
    let total_pairs = *cover_start.last().unwrap();
    let mut generated = 0usize;
    let mut json = String::with_capacity(cfg.records_per_file * 1400 + 64);
    let mut offsets = Vec::with_capacity(cfg.records_per_file);
    for f in 0..cfg.files {
        let account_idx = f % n_accounts;
        let region = REGIONS[(f / n_accounts) % REGIONS.len()];
        let window = cfg.start + (f / n_accounts) as i64 * 300;
        offsets.clear();
        offsets.extend((0..cfg.records_per_file).map(|_| rng.below(300) as i64));
        offsets.sort_unstable();
        json.clear();
        json.push_str("{\"Records\":[");
        for (r, offset) in offsets.iter().enumerate() {
            if r > 0 {
                json.push(',');
            }
            let time = window + offset;
            // First cover every (principal, call) pair once, then a skewed mix within the file's account.
            let (p_idx, call_slot) = if generated < total_pairs {
                let p_idx = cover_start.partition_point(|&start| start <= generated) - 1;
                (p_idx, Some(generated - cover_start[p_idx]))
            } else {
                let per_account = principals.len().div_ceil(n_accounts);
                let rank = (per_account as f64 * rng.unit().powf(2.5)) as usize;
                let idx = rank * n_accounts + account_idx;
                (if idx < principals.len() { idx } else { account_idx.min(principals.len() - 1) }, None)
            };
            generated += 1;
            let principal = &principals[p_idx];
            if call_slot.is_none() && rng.chance(0.001) {
                write_insight(&mut json, &mut rng, time, region, &principal.account);
                summary.records += 1;
                continue;
            }
            let mut truth = make_truth(principal, call_slot, time, region, &mut rng);
            if cfg.incidents {
                // Clean background: sign-ins succeed with MFA, and only errors no rule watches.
                truth.console = truth.console.map(|_| (true, true));
                truth.error = truth.error.filter(|e| !crate::parse::is_authorization_failure(e));
            }
            write_record(&mut json, &mut rng, &truth);
            oracle.observe(&truth);
            summary.records += 1;
        }
        json.push_str("]}");
        summary.json_bytes += json.len() as u64;
        summary.bytes += write_file(out, account_idx, region, window, &json, &mut rng)?;
        summary.files += 1;
    }
    if cfg.incidents {
        let (json, alerts) = incidents(cfg.start, &mut rng);
        summary.records += json.matches("\"eventID\"").count() as u64;
        summary.json_bytes += json.len() as u64;
        summary.bytes += write_file(out, 0, "us-east-1", cfg.start, &json, &mut rng)?;
        summary.files += 1;
        summary.alerts = alerts;
    }
    Ok((summary, oracle.finish()))
}

/// One file of incidents, one or more per built-in rule, within one hour (one dedup window), and the alerts it
/// must raise. The expected rules per event are written here by hand, from the rules' descriptions.
/// An inventory matching a corpus, one `aws iam get-account-authorization-details` document per account (with
/// `AccessKeyMetadata`), from the report the corpus must produce: each IAM user and role is granted what it used
/// plus a few actions it never used, and was created well before `start`, so `report permissions` shows used,
/// unused and unused-service results without AWS. Roles assumed from elsewhere get their role; other identities
/// (root, services, federated users) are not in an IAM inventory.
pub fn inventory(expected: &[IdentityReport], start: Timestamp) -> BTreeMap<String, serde_json::Value> {
    use serde_json::json;
    // Never used by the generated traffic: a service of their own, and a dangerous action in a used one.
    const NEVER_USED: [&str; 3] = ["dynamodb:DeleteTable", "iam:CreateAccessKey", "s3:DeleteBucket"];
    let created = format_rfc3339(start - 400 * 86_400);
    // Per account: users, roles and access keys.
    type Lists = (Vec<serde_json::Value>, Vec<serde_json::Value>, Vec<serde_json::Value>);
    let mut accounts: BTreeMap<String, Lists> = BTreeMap::new();
    for identity in expected {
        let (Some(account), Some((_, path))) = (&identity.account_id, identity.principal.split_once(":iam::")) else {
            continue;
        };
        let Some(name) = path.split_once('/').map(|(_, n)| n.rsplit('/').next().unwrap_or(n)) else { continue };
        let mut actions: Vec<&str> =
            identity.actions.iter().filter(|a| a.count > 0).map(|a| a.action.as_str()).collect();
        actions.extend(NEVER_USED);
        let policy = json!({"PolicyName": "synth-granted", "PolicyDocument": {"Version": "2012-10-17",
            "Statement": [{"Effect": "Allow", "Action": actions, "Resource": "*"}]}});
        let (users, roles, keys) = accounts.entry(account.clone()).or_default();
        match identity.kind.as_str() {
            "IAMUser" => {
                users.push(json!({"UserName": name, "Arn": identity.principal, "CreateDate": created,
                    "UserPolicyList": [policy], "GroupList": [], "AttachedManagedPolicies": []}));
                keys.extend(identity.access_keys.iter().map(
                    |key| json!({"UserName": name, "AccessKeyId": key.id, "Status": "Active", "CreateDate": created}),
                ));
            }
            "Role" => roles.push(json!({"RoleName": name, "Arn": identity.principal, "CreateDate": created,
                "RolePolicyList": [policy], "AttachedManagedPolicies": []})),
            _ => {}
        }
    }
    accounts
        .into_iter()
        .map(|(account, (users, roles, keys))| {
            let details = json!({"UserDetailList": users, "GroupDetailList": [], "RoleDetailList": roles,
                "Policies": [], "AccessKeyMetadata": keys});
            (account, details)
        })
        .collect()
}

fn incidents(start: Timestamp, rng: &mut Rng) -> (String, Vec<ExpectedAlert>) {
    use serde_json::{Value, json};
    let acct = account_id(0);
    let admin = format!("arn:aws:iam::{acct}:user/incident-admin");
    let root = format!("arn:aws:iam::{acct}:root");
    let prober = format!("arn:aws:iam::{acct}:role/incident-prober");
    let user = |name: &str| {
        json!({"type": "IAMUser", "principalId": format!("AIDA{name}"), "arn": format!("arn:aws:iam::{acct}:user/{name}"),
               "accountId": acct, "userName": name, "accessKeyId": "AKIAINCIDENTADMIN01"})
    };
    let root_identity = json!({"type": "Root", "principalId": acct, "arn": root, "accountId": acct});
    let role_session = json!({"type": "AssumedRole", "principalId": "AROAPROBER:probe",
        "arn": format!("arn:aws:sts::{acct}:assumed-role/incident-prober/probe"), "accountId": acct,
        "sessionContext": {"sessionIssuer": {"type": "Role", "arn": prober, "accountId": acct, "userName": "incident-prober"}}});
    let harvester = format!("arn:aws:iam::{acct}:role/incident-harvester");
    let (veteran, scout) =
        (format!("arn:aws:iam::{acct}:user/incident-veteran"), format!("arn:aws:iam::{acct}:user/incident-scout"));
    let harvester_session = json!({"type": "AssumedRole", "principalId": "AROAHARVESTER:i-0a1b2c3d4e5f60718",
        "accessKeyId": "ASIAHARVESTERINST01",
        "arn": format!("arn:aws:sts::{acct}:assumed-role/incident-harvester/i-0a1b2c3d4e5f60718"), "accountId": acct,
        "sessionContext": {"sessionIssuer": {"type": "Role", "arn": harvester, "accountId": acct,
                           "userName": "incident-harvester"}}});
    // (identity, principal, eventSource, eventName, extra fields, rules expected to fire on it)
    type Incident<'a> = (Value, &'a str, &'a str, &'a str, Value, &'a [&'a str]);
    let mut plan: Vec<Incident<'_>> = vec![
        (root_identity.clone(), &root, "ec2.amazonaws.com", "DescribeInstances", json!({}), &["root-account-usage"]),
        (
            root_identity.clone(),
            &root,
            "iam.amazonaws.com",
            "CreateAccessKey",
            json!({}),
            &["root-account-usage", "root-access-key-created"],
        ),
        (
            user("incident-admin"),
            &admin,
            "signin.amazonaws.com",
            "ConsoleLogin",
            json!({"eventType": "AwsConsoleSignIn", "responseElements": {"ConsoleLogin": "Success"},
                   "additionalEventData": {"MFAUsed": "No"}}),
            &["console-login-without-mfa"],
        ),
        (
            user("incident-admin"),
            &admin,
            "cloudtrail.amazonaws.com",
            "StopLogging",
            json!({}),
            &["cloudtrail-tampering"],
        ),
        (
            user("incident-admin"),
            &admin,
            "guardduty.amazonaws.com",
            "DeleteDetector",
            json!({}),
            &["security-tooling-disabled"],
        ),
        (
            user("incident-admin"),
            &admin,
            "iam.amazonaws.com",
            "AttachRolePolicy",
            json!({"requestParameters": {"roleName": "ops", "policyArn": "arn:aws:iam::aws:policy/AdministratorAccess"}}),
            &["admin-policy-attached"],
        ),
        (
            user("incident-admin"),
            &admin,
            "iam.amazonaws.com",
            "PutUserPolicy",
            json!({"requestParameters": {"userName": "bob", "policyName": "p",
                "policyDocument": "{\"Statement\":[{\"Effect\":\"Allow\",\"Action\":\"s3:GetObject\",\"Resource\":\"*\"}]}"}}),
            &["user-policy-attached"],
        ),
        (
            user("incident-admin"),
            &admin,
            "iam.amazonaws.com",
            "CreateAccessKey",
            json!({"requestParameters": {"userName": "bob"}}),
            &["access-key-created-for-other-user"],
        ),
        (
            user("incident-admin"),
            &admin,
            "iam.amazonaws.com",
            "UpdateLoginProfile",
            json!({"requestParameters": {"userName": "bob"}}),
            &["login-profile-changed-for-other-user"],
        ),
        (
            user("incident-admin"),
            &admin,
            "iam.amazonaws.com",
            "DeactivateMFADevice",
            json!({"requestParameters": {"userName": "bob", "serialNumber": format!("arn:aws:iam::{acct}:mfa/bob")}}),
            &["mfa-device-removed"],
        ),
        (
            user("incident-admin"),
            &admin,
            "iam.amazonaws.com",
            "DeleteAccountPasswordPolicy",
            json!({}),
            &["password-policy-weakened"],
        ),
        (
            user("incident-admin"),
            &admin,
            "kms.amazonaws.com",
            "ScheduleKeyDeletion",
            json!({"requestParameters": {"keyId": "k-1", "pendingWindowInDays": 7}}),
            &["kms-key-disabled-or-deleted"],
        ),
        (
            user("incident-admin"),
            &admin,
            "s3.amazonaws.com",
            "PutBucketPolicy",
            json!({"requestParameters": {"bucketName": "b"}}),
            &["s3-bucket-policy-changed"],
        ),
        (
            user("incident-admin"),
            &admin,
            "s3.amazonaws.com",
            "DeleteBucketPublicAccessBlock",
            json!({"requestParameters": {"bucketName": "b"}}),
            &["s3-public-access-block-removed"],
        ),
        (
            user("incident-admin"),
            &admin,
            "ec2.amazonaws.com",
            "AuthorizeSecurityGroupIngress",
            json!({"requestParameters": {"groupId": "sg-1"}}),
            &["network-config-changed"],
        ),
        (
            user("incident-admin"),
            &admin,
            "organizations.amazonaws.com",
            "AttachPolicy",
            json!({"requestParameters": {"policyId": "p-1", "targetId": "ou-1"}}),
            &["organizations-changed"],
        ),
        (
            user("incident-admin"),
            &admin,
            "sts.amazonaws.com",
            "GetCallerIdentity",
            json!({"userAgent": "Boto3/1.34.1 Python/3.11 Linux/6.6.9-amd64-kali1 Botocore/1.34.1"}),
            &["pentest-user-agent"],
        ),
        (
            user("incident-admin"),
            &admin,
            "ec2.amazonaws.com",
            "GetPasswordData",
            json!({"requestParameters": {"instanceId": "i-0a1b2c3d4e5f60718"}}),
            &["ec2-password-or-user-data-read"],
        ),
        (
            user("incident-admin"),
            &admin,
            "secretsmanager.amazonaws.com",
            "BatchGetSecretValue",
            json!({"requestParameters": {"filters": [{"key": "name", "values": ["prod"]}]}}),
            &["secrets-batch-retrieved"],
        ),
        (
            user("incident-admin"),
            &admin,
            "iam.amazonaws.com",
            "UpdateAssumeRolePolicy",
            json!({"requestParameters": {"roleName": "ops", "policyDocument":
                "{\"Version\":\"2012-10-17\",\"Statement\":[{\"Effect\":\"Allow\",\"Principal\":{\"AWS\":\"arn:aws:iam::999999999999:root\"},\"Action\":\"sts:AssumeRole\"}]}"}}),
            &["role-trusts-other-account"],
        ),
        (
            user("incident-admin"),
            &admin,
            "iam.amazonaws.com",
            "CreatePolicyVersion",
            json!({"requestParameters": {"policyArn": "arn:aws:iam::000000000000:policy/ops", "policyDocument": "{}", "setAsDefault": true}}),
            &["policy-version-set-as-default"],
        ),
        (
            user("incident-admin"),
            &admin,
            "iam.amazonaws.com",
            "DeleteRolePermissionsBoundary",
            json!({"requestParameters": {"roleName": "ops"}}),
            &["permissions-boundary-removed"],
        ),
        (
            user("incident-admin"),
            &admin,
            "lambda.amazonaws.com",
            "AddPermission20150331v2",
            json!({"requestParameters": {"functionName": "f", "statementId": "s", "action": "lambda:InvokeFunction", "principal": "*"}}),
            &["lambda-made-public"],
        ),
        (
            user("incident-admin"),
            &admin,
            "rolesanywhere.amazonaws.com",
            "CreateTrustAnchor",
            json!({"requestParameters": {"name": "ta", "enabled": true}}),
            &["roles-anywhere-trust-anchor-created"],
        ),
        (
            user("incident-admin"),
            &admin,
            "sts.amazonaws.com",
            "GetFederationToken",
            json!({"requestParameters": {"name": "backdoor", "durationSeconds": 129600}}),
            &["federation-token-issued"],
        ),
        (
            user("incident-admin"),
            &admin,
            "sso.amazonaws.com",
            "CreateAccountAssignment",
            json!({"requestParameters": {"targetId": "000000000000", "targetType": "AWS_ACCOUNT", "principalType": "USER", "principalId": "u-1"}}),
            &["identity-center-changed"],
        ),
        (
            user("incident-admin"),
            &admin,
            "eks.amazonaws.com",
            "CreateAccessEntry",
            json!({"requestParameters": {"clusterName": "c", "principalArn": "arn:aws:iam::999999999999:role/x"}}),
            &["eks-access-granted"],
        ),
        (
            user("incident-admin"),
            &admin,
            "route53resolver.amazonaws.com",
            "DeleteResolverQueryLogConfig",
            json!({"requestParameters": {"resolverQueryLogConfigId": "rqlc-1"}}),
            &["dns-query-logging-removed"],
        ),
        (
            user("incident-admin"),
            &admin,
            "bedrock.amazonaws.com",
            "DeleteModelInvocationLoggingConfiguration",
            json!({}),
            &["bedrock-invocation-logging-removed"],
        ),
        (
            user("incident-admin"),
            &admin,
            "logs.amazonaws.com",
            "DeleteLogGroup",
            json!({"requestParameters": {"logGroupName": "/vpc/flow-logs"}}),
            &["cloudwatch-logs-deleted"],
        ),
        (
            user("incident-admin"),
            &admin,
            "s3.amazonaws.com",
            "PutBucketLogging",
            json!({"requestParameters": {"bucketName": "b", "BucketLoggingStatus": {"xmlns": "http://s3.amazonaws.com/doc/2006-03-01/"}}}),
            &["s3-logging-disabled"],
        ),
        (
            user("incident-admin"),
            &admin,
            "guardduty.amazonaws.com",
            "UpdateIPSet",
            json!({"requestParameters": {"detectorId": "d", "ipSetId": "i", "activate": true}}),
            &["guardduty-findings-suppressed"],
        ),
        (
            user("incident-admin"),
            &admin,
            "ec2.amazonaws.com",
            "DisableEbsEncryptionByDefault",
            json!({}),
            &["encryption-by-default-disabled"],
        ),
        (
            user("incident-admin"),
            &admin,
            "ec2.amazonaws.com",
            "ModifySnapshotAttribute",
            json!({"requestParameters": {"snapshotId": "snap-1", "createVolumePermission": {"add": {"items": [{"userId": "999999999999"}]}}, "attributeType": "CREATE_VOLUME_PERMISSION"}}),
            &["snapshot-or-image-shared"],
        ),
        (
            user("incident-admin"),
            &admin,
            "s3.amazonaws.com",
            "PutBucketAcl",
            json!({"requestParameters": {"bucketName": "b", "AccessControlPolicy": {"AccessControlList": {"Grant": [{"Grantee": {"URI": "http://acs.amazonaws.com/groups/global/AllUsers"}, "Permission": "READ"}]}}}}),
            &["s3-bucket-opened", "s3-bucket-policy-changed"],
        ),
        (
            user("incident-admin"),
            &admin,
            "ssm.amazonaws.com",
            "SendCommand",
            json!({"requestParameters": {"instanceIds": ["i-0a1b2c3d4e5f60718"], "documentName": "AWS-RunShellScript"}}),
            &["ssm-command-or-session"],
        ),
        (
            user("incident-admin"),
            &admin,
            "ec2-instance-connect.amazonaws.com",
            "SendSSHPublicKey",
            json!({"requestParameters": {"instanceId": "i-0a1b2c3d4e5f60718", "instanceOSUser": "ec2-user"}}),
            &["ec2-ssh-key-pushed"],
        ),
        (
            user("incident-admin"),
            &admin,
            "ec2.amazonaws.com",
            "ModifyInstanceAttribute",
            json!({"requestParameters": {"instanceId": "i-0a1b2c3d4e5f60718", "userData": "<sensitiveDataRemoved>"}}),
            &["instance-user-data-modified"],
        ),
        (
            user("incident-admin"),
            &admin,
            "ec2.amazonaws.com",
            "RunInstances",
            json!({"requestParameters": {"instanceType": "p4d.24xlarge", "instancesSet": {"items": [{"imageId": "ami-1", "minCount": 1, "maxCount": 1}]}}}),
            &["unusual-instance-type-launched"],
        ),
        (
            user("incident-admin"),
            &admin,
            "organizations.amazonaws.com",
            "LeaveOrganization",
            json!({"errorCode": "AccessDeniedException", "errorMessage": "denied by a service control policy"}),
            &["organization-left"],
        ),
    ];
    for _ in 0..5 {
        plan.push((
            user("incident-target"),
            "",
            "signin.amazonaws.com",
            "ConsoleLogin",
            json!({"eventType": "AwsConsoleSignIn", "responseElements": {"ConsoleLogin": "Failure"},
                   "errorMessage": "Failed authentication", "additionalEventData": {"MFAUsed": "No"}}),
            &["console-login-failures"],
        ));
    }
    for _ in 0..20 {
        plan.push((
            role_session.clone(),
            &prober,
            "iam.amazonaws.com",
            "ListUsers",
            json!({"errorCode": "AccessDenied", "errorMessage": "not authorized"}),
            &["unauthorized-api-calls"],
        ));
    }
    for i in 0..10 {
        plan.push((
            harvester_session.clone(),
            &harvester,
            "secretsmanager.amazonaws.com",
            "GetSecretValue",
            json!({"requestParameters": {"secretId": format!("prod/service-{i}")}}),
            &["secrets-read-in-bulk"],
        ));
    }
    for i in 0..5 {
        plan.push((
            harvester_session.clone(),
            &harvester,
            "ssm.amazonaws.com",
            "GetParametersByPath",
            json!({"requestParameters": {"path": format!("/prod/{i}"), "recursive": true, "withDecryption": true}}),
            &["ssm-parameters-read-in-bulk"],
        ));
    }
    for region in ["eu-north-1", "ap-south-1", "me-south-1"] {
        plan.push((
            harvester_session.clone(),
            &harvester,
            "ec2.amazonaws.com",
            "RunInstances",
            json!({"awsRegion": region, "requestParameters": {"instanceType": "c5.xlarge"}}),
            &["instance-launch-burst"],
        ));
    }
    // Behavioural: a veteran (known for three weeks) calls Bedrock for the first time; a scout lists six services
    // in two minutes; the harvester's instance credentials are used from a second public address.
    plan.push((
        user("incident-veteran"),
        &veteran,
        "sts.amazonaws.com",
        "GetCallerIdentity",
        json!({"eventTime": format_rfc3339(start - 21 * 86_400)}),
        &[],
    ));
    plan.push((
        user("incident-veteran"),
        &veteran,
        "bedrock.amazonaws.com",
        "InvokeModel",
        json!({"requestParameters": {"modelId": "anthropic.claude-3-haiku-20240307-v1:0"}}),
        &[],
    ));
    for (source, name) in [
        ("iam.amazonaws.com", "ListUsers"),
        ("s3.amazonaws.com", "ListBuckets"),
        ("ec2.amazonaws.com", "DescribeSnapshots"),
        ("cloudtrail.amazonaws.com", "DescribeTrails"),
        ("guardduty.amazonaws.com", "ListDetectors"),
        ("lambda.amazonaws.com", "ListFunctions20150331"),
    ] {
        plan.push((user("incident-scout"), &scout, source, name, json!({}), &[]));
    }
    plan.push((
        harvester_session.clone(),
        &harvester,
        "sts.amazonaws.com",
        "GetCallerIdentity",
        json!({"sourceIPAddress": "203.0.113.9"}),
        &[],
    ));
    let behavioural = [
        ("sensitive-service-first-use", veteran.clone()),
        ("service-enumeration", scout.clone()),
        ("instance-credentials-used-elsewhere", harvester.clone()),
    ];
    let target = format!("arn:aws:iam::{acct}:user/incident-target");
    let mut records = Vec::new();
    let mut expected: BTreeMap<(String, String), Vec<String>> = BTreeMap::new();
    for (i, (identity, principal, source, name, extra, rules)) in plan.into_iter().enumerate() {
        let mut event_id = String::new();
        rng.uuid(&mut event_id);
        let mut record = json!({
            "eventVersion": "1.09", "userIdentity": identity,
            // 20 s apart: every burst fits its 10-minute window, and all of it one hour.
            "eventTime": format_rfc3339(start + 60 + 20 * i as i64),
            "eventSource": source, "eventName": name, "awsRegion": "us-east-1",
            "sourceIPAddress": "198.51.100.66", "userAgent": "aws-cli/2.15.30 Python/3.11.8",
            "eventID": event_id, "eventType": "AwsApiCall", "recipientAccountId": acct,
        });
        for (key, value) in extra.as_object().expect("a map") {
            record[key] = value.clone();
        }
        records.push(record);
        let principal = if principal.is_empty() { target.clone() } else { principal.to_owned() };
        for rule in rules {
            expected.entry(((*rule).to_owned(), principal.clone())).or_default().push(event_id.clone());
        }
    }
    for (rule, principal) in behavioural {
        expected.insert((rule.to_owned(), principal), Vec::new());
    }
    let alerts = expected
        .into_iter()
        .map(|((rule, principal), mut event_ids)| {
            event_ids.sort();
            ExpectedAlert { rule, principal, event_ids }
        })
        .collect();
    (json!({ "Records": records }).to_string(), alerts)
}

fn make_truth<'p>(
    p: &'p Principal,
    call_slot: Option<usize>,
    time: Timestamp,
    region: &'static str,
    rng: &mut Rng,
) -> Truth<'p> {
    let console = match (p.kind, call_slot) {
        (Kind::User, None) if rng.chance(0.02) => Some((rng.chance(0.85), rng.chance(0.6))),
        (Kind::Root, None) if rng.chance(0.1) => Some((rng.chance(0.8), rng.chance(0.5))),
        _ => None,
    };
    let service_event = p.kind == Kind::Service && call_slot.is_none() && rng.chance(0.5);
    let call =
        if console.is_some() { None } else { Some(p.calls[call_slot.unwrap_or_else(|| rng.below(p.calls.len()))]) };
    let error = match (console, rng.unit()) {
        (Some(_), _) => None,
        (None, u) if u < 0.03 => Some("AccessDenied"),
        (None, u) if u < 0.04 => Some("Client.UnauthorizedOperation"),
        (None, u) if u < 0.05 => Some("ThrottlingException"),
        (None, u) if u < 0.06 => Some("ResourceNotFoundException"),
        _ => None,
    };
    let session = match p.kind {
        Kind::Role => Some(match rng.below(4) {
            0 => format!("i-0{:015x}", rng.next() % 64),
            1 => format!("botocore-session-{}", 1_700_000_000 + rng.below(40)),
            2 => format!("{}-deploy", p.name),
            _ => format!("aws-go-sdk-{}", rng.below(20)),
        }),
        _ => None,
    };
    let key =
        if console.is_some() || p.keys.is_empty() { None } else { Some(p.keys[rng.below(p.keys.len())].as_str()) };
    let ip = p.ips[rng.below(2)].as_str();
    let agent = if console.is_some() {
        "Mozilla/5.0 (X11; Linux x86_64) Firefox/126.0"
    } else {
        USER_AGENTS[p.agents[rng.below(2)]]
    };
    Truth { principal: p, time, call, error, console, service_event, key, session, ip, region, agent }
}

fn write_identity(json: &mut String, t: &Truth<'_>, rng: &mut Rng) {
    let p = t.principal;
    let acct = &p.account;
    let _ = match p.kind {
        Kind::Role => {
            let session = t.session.as_deref().unwrap_or("s");
            write!(
                json,
                r#"{{"type":"AssumedRole","principalId":"AROA{acct}:{session}","arn":"arn:aws:sts::{acct}:assumed-role/{name}/{session}","accountId":"{acct}","accessKeyId":"ASIA{k:016X}","sessionContext":{{"sessionIssuer":{{"type":"Role","principalId":"AROA{acct}","arn":"arn:aws:iam::{acct}:role/app/{name}","accountId":"{acct}","userName":"{name}"}},"attributes":{{"creationDate":"{created}","mfaAuthenticated":"false"}}}}}}"#,
                name = p.name,
                k = rng.next(),
                created = format_rfc3339(t.time - 600),
            )
        }
        Kind::User => {
            let key = t.key.map(|k| format!(r#","accessKeyId":"{k}""#)).unwrap_or_default();
            write!(
                json,
                r#"{{"type":"IAMUser","principalId":"AIDA{acct}{name}","arn":"arn:aws:iam::{acct}:user/{name}","accountId":"{acct}"{key},"userName":"{name}"}}"#,
                name = p.name
            )
        }
        Kind::Root => {
            let key = t.key.map(|k| format!(r#","accessKeyId":"{k}""#)).unwrap_or_default();
            write!(
                json,
                r#"{{"type":"Root","principalId":"{acct}","arn":"arn:aws:iam::{acct}:root","accountId":"{acct}"{key}}}"#
            )
        }
        Kind::Federated => write!(
            json,
            r#"{{"type":"FederatedUser","principalId":"{acct}:{name}","arn":"arn:aws:sts::{acct}:federated-user/{name}","accountId":"{acct}","accessKeyId":"ASIA{k:016X}","sessionContext":{{"sessionIssuer":{{"type":"IAMUser","principalId":"AIDA{name}","arn":"arn:aws:iam::{acct}:user/{name}-issuer","accountId":"{acct}","userName":"{name}-issuer"}},"attributes":{{"creationDate":"{created}","mfaAuthenticated":"false"}}}}}}"#,
            name = p.name,
            k = rng.next(),
            created = format_rfc3339(t.time - 60),
        ),
        Kind::Service if t.service_event => {
            write!(json, r#"{{"accountId":"{acct}","invokedBy":"{}"}}"#, p.name)
        }
        Kind::Service => write!(json, r#"{{"type":"AWSService","invokedBy":"{}"}}"#, p.name),
        Kind::Saml => write!(
            json,
            r#"{{"type":"SAMLUser","principalId":"SAMLIDP:{name}","userName":"{name}","identityProvider":"arn:aws:iam::{acct}:saml-provider/corp","accountId":"{acct}"}}"#,
            name = p.name
        ),
        Kind::WebIdentity => write!(
            json,
            r#"{{"type":"WebIdentityUser","principalId":"accounts.google.com:app:{name}","userName":"{name}","arn":"arn:aws:sts::{acct}:assumed-role/web/{name}","accountId":"{acct}","identityProvider":"accounts.google.com"}}"#,
            name = p.name
        ),
        Kind::IdentityCenter => write!(
            json,
            r#"{{"type":"IdentityCenterUser","accountId":"{acct}","onBehalfOf":{{"userId":"u-{name}","identityStoreArn":"arn:aws:identitystore::{acct}:identitystore/d-9067642ac7"}},"credentialId":"{k:016x}"}}"#,
            name = p.name,
            k = rng.next()
        ),
        Kind::Account => {
            write!(json, r#"{{"type":"AWSAccount","principalId":"AIDA{name}","accountId":"{name}"}}"#, name = p.name)
        }
    };
}

fn write_record(json: &mut String, rng: &mut Rng, t: &Truth<'_>) {
    let p = t.principal;
    let (source, name) = match (t.console, t.call) {
        (Some(_), _) => ("signin.amazonaws.com", "ConsoleLogin"),
        (None, Some(c)) => (CALLS[c].0, CALLS[c].1),
        (None, None) => unreachable!("an event is a sign-in or a call"),
    };
    let _ = write!(json, r#"{{"eventVersion":"1.09","userIdentity":"#);
    write_identity(json, t, rng);
    let source_ip = if p.kind == Kind::Service { p.name.as_str() } else { t.ip };
    let _ = write!(
        json,
        r#","eventTime":"{}","eventSource":"{source}","eventName":"{name}","awsRegion":"{}","sourceIPAddress":"{source_ip}","userAgent":"{}""#,
        format_rfc3339(t.time),
        t.region,
        t.agent
    );
    if let Some(code) = t.error {
        let _ = write!(
            json,
            r#","errorCode":"{code}","errorMessage":"User is not authorized to perform this operation because no identity-based policy allows the action""#
        );
    }
    match t.console {
        Some((success, mfa)) => {
            let _ = write!(
                json,
                r#","requestParameters":null,"responseElements":{{"ConsoleLogin":"{}"}},"additionalEventData":{{"LoginTo":"https://console.aws.amazon.com/console/home","MobileVersion":"No","MFAUsed":"{}"}}"#,
                if success { "Success" } else { "Failure" },
                if mfa { "Yes" } else { "No" }
            );
            if !success {
                json.push_str(r#","errorMessage":"Failed authentication""#);
            }
        }
        None => {
            let _ = write!(
                json,
                r#","requestParameters":{{"bucketName":"data-{}-{}","key":"exports/{}/part-{:05}.parquet","maxResults":100,"filters":[{{"name":"tag:team","values":["platform","security"]}}]}},"responseElements":null"#,
                p.account,
                t.region,
                rng.below(1000),
                rng.below(100_000)
            );
        }
    }
    json.push_str(r#","requestID":""#);
    rng.uuid(json);
    json.push_str(r#"","eventID":""#);
    rng.uuid(json);
    let event_type = if t.service_event {
        "AwsServiceEvent"
    } else if t.console.is_some() {
        "AwsConsoleSignIn"
    } else {
        "AwsApiCall"
    };
    let _ = write!(
        json,
        r#"","readOnly":{},"eventType":"{event_type}","managementEvent":true,"recipientAccountId":"{}","eventCategory":"Management","tlsDetails":{{"tlsVersion":"TLSv1.3","cipherSuite":"TLS_AES_128_GCM_SHA256","clientProvidedHostHeader":"{}"}}}}"#,
        rng.chance(0.7),
        p.account,
        source.replace(".amazonaws.com", &format!(".{}.amazonaws.com", t.region)),
    );
}

fn write_insight(json: &mut String, rng: &mut Rng, time: Timestamp, region: &str, account: &str) {
    let _ = write!(
        json,
        r#"{{"eventVersion":"1.08","eventTime":"{}","awsRegion":"{region}","eventID":""#,
        format_rfc3339(time)
    );
    rng.uuid(json);
    let _ = write!(
        json,
        r#"","eventType":"AwsCloudTrailInsight","recipientAccountId":"{account}","sharedEventID":"x","insightDetails":{{"state":"Start","eventSource":"ec2.amazonaws.com","eventName":"RunInstances","insightType":"ApiCallRateInsight","insightContext":{{"statistics":{{"baseline":{{"average":0.01}},"insight":{{"average":1.5}}}}}}}},"eventCategory":"Insight"}}"#
    );
}

fn write_file(
    out: &Path,
    account_idx: usize,
    region: &str,
    window: Timestamp,
    json: &str,
    rng: &mut Rng,
) -> std::io::Result<u64> {
    let acct = account_id(account_idx);
    let stamp = format_rfc3339(window);
    let (date, hm) = (&stamp[..10], format!("{}{}", &stamp[11..13], &stamp[14..16]));
    let dir: PathBuf =
        [out, Path::new(&format!("AWSLogs/{acct}/CloudTrail/{region}/{}", date.replace('-', "/")))].iter().collect();
    std::fs::create_dir_all(&dir)?;
    let mut unique = String::new();
    rng.token(16, &mut unique);
    let name = format!("{acct}_CloudTrail_{region}_{}T{hm}Z_{unique}.json.gz", date.replace('-', ""));
    let mut enc = GzEncoder::new(Vec::with_capacity(json.len() / 8), Compression::default());
    enc.write_all(json.as_bytes())?;
    let bytes = enc.finish()?;
    // Write under a hidden temporary name and rename, so a watching spool never reads a partial file.
    let tmp = dir.join(format!(".{name}.tmp"));
    std::fs::write(&tmp, &bytes)?;
    std::fs::rename(&tmp, dir.join(&name))?;
    Ok(bytes.len() as u64)
}

/// The expected state, kept with full maps and reduced only at the end.
#[derive(Default)]
struct Oracle {
    principals: BTreeMap<String, Expected>,
    keys: BTreeMap<String, (Timestamp, String, Timestamp)>,
}

struct Expected {
    first: (Timestamp, &'static str, String),
    last: (Timestamp, String, String, String),
    events: u64,
    errors: u64,
    console: Option<(Timestamp, bool)>,
    sessions: HashMap<String, Timestamp>,
    actions: BTreeMap<&'static str, ActionReportAcc>,
}

#[derive(Default)]
struct ActionReportAcc {
    first_used: Option<Timestamp>,
    last_used: Option<Timestamp>,
    count: u64,
    last_denied: Option<Timestamp>,
    denied: u64,
}

impl Oracle {
    fn observe(&mut self, t: &Truth<'_>) {
        let (principal, kind, account) = t.principal.expected_identity();
        let account = account.unwrap_or_default();
        let source_ip = if t.principal.kind == Kind::Service { t.principal.name.clone() } else { t.ip.to_owned() };
        let last = (t.time, source_ip, t.region.to_owned(), t.agent.to_owned());
        let e = self.principals.entry(principal.clone()).or_insert_with(|| Expected {
            first: (t.time, kind, account.clone()),
            last: last.clone(),
            events: 0,
            errors: 0,
            console: None,
            sessions: HashMap::new(),
            actions: BTreeMap::new(),
        });
        e.first = e.first.clone().min((t.time, kind, account));
        e.last = e.last.clone().max(last);
        e.events += 1;
        let failed_login = matches!(t.console, Some((false, _)));
        if t.error.is_some() || failed_login {
            e.errors += 1;
        }
        if let Some((true, mfa)) = t.console {
            e.console = e.console.max(Some((t.time, mfa)));
        }
        if let Some(s) = &t.session {
            let v = e.sessions.entry(s.clone()).or_insert(t.time);
            *v = (*v).max(t.time);
        }
        if let Some(call) = t.call.filter(|_| !t.service_event) {
            let denied = matches!(t.error, Some("AccessDenied" | "Client.UnauthorizedOperation"));
            for action in CALLS[call].2 {
                let a = e.actions.entry(action).or_default();
                if denied {
                    a.denied += 1;
                    a.last_denied = a.last_denied.max(Some(t.time));
                } else {
                    a.count += 1;
                    a.last_used = a.last_used.max(Some(t.time));
                    a.first_used = Some(a.first_used.map_or(t.time, |f| f.min(t.time)));
                }
            }
        }
        if let Some(key) = t.key {
            let k = self.keys.entry(key.to_owned()).or_insert((t.time, principal.clone(), t.time));
            if (t.time, &principal) < (k.0, &k.1) {
                k.1 = principal;
            }
            k.0 = k.0.min(t.time);
            k.2 = k.2.max(t.time);
        }
    }

    fn finish(self) -> Vec<IdentityReport> {
        let mut keys_by_owner: BTreeMap<String, Vec<AccessKeyReport>> = BTreeMap::new();
        for (id, (first, owner, last)) in self.keys {
            keys_by_owner.entry(owner).or_default().push(AccessKeyReport {
                id,
                first_used: format_rfc3339(first),
                last_used: format_rfc3339(last),
            });
        }
        let opt = |s: String| (!s.is_empty()).then_some(s);
        self.principals
            .into_iter()
            .map(|(principal, e)| {
                let mut sessions: Vec<(String, Timestamp)> = e.sessions.into_iter().collect();
                sessions.sort_by(|a, b| (b.1, &b.0).cmp(&(a.1, &a.0)));
                sessions.truncate(crate::state::MAX_SESSIONS);
                IdentityReport {
                    kind: e.first.1.to_owned(),
                    account_id: opt(e.first.2),
                    first_seen: format_rfc3339(e.first.0),
                    last_seen: format_rfc3339(e.last.0),
                    events: e.events,
                    errors: e.errors,
                    last_source_ip: opt(e.last.1),
                    last_region: opt(e.last.2),
                    last_user_agent: opt(e.last.3),
                    last_console_login: e
                        .console
                        .map(|(t, mfa)| ConsoleLoginReport { time: format_rfc3339(t), mfa_used: mfa }),
                    recent_sessions: sessions.into_iter().map(|s| s.0).collect(),
                    actions: e
                        .actions
                        .into_iter()
                        .map(|(action, a)| ActionReport {
                            action: action.to_owned(),
                            first_used: a.first_used.map(format_rfc3339),
                            last_used: a.last_used.map(format_rfc3339),
                            count: a.count,
                            last_denied: a.last_denied.map(format_rfc3339),
                            denied: a.denied,
                        })
                        .collect(),
                    access_keys: keys_by_owner.remove(&principal).unwrap_or_default(),
                    principal,
                }
            })
            .collect()
    }
}
