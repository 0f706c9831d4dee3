//! Borrowed CloudTrail record shapes holding only the fields trailwatch reads; unknown fields are skipped unparsed.

use serde::Deserialize;

use crate::parse::lenient::{Obj, Text};

/// One element of `Records`, as written by CloudTrail. Every field may be absent or of an unexpected type.
#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct RawRecord<'a> {
    #[serde(borrow)]
    pub event_time: Text<'a>,
    #[serde(borrow)]
    pub event_source: Text<'a>,
    #[serde(borrow)]
    pub event_name: Text<'a>,
    #[serde(borrow)]
    pub event_type: Text<'a>,
    #[serde(borrow)]
    pub error_code: Text<'a>,
    #[serde(rename = "sourceIPAddress", borrow)]
    pub source_ip_address: Text<'a>,
    #[serde(borrow)]
    pub user_agent: Text<'a>,
    #[serde(borrow)]
    pub aws_region: Text<'a>,
    #[serde(borrow)]
    pub recipient_account_id: Text<'a>,
    #[serde(borrow)]
    pub user_identity: Obj<RawIdentity<'a>>,
    #[serde(borrow)]
    pub response_elements: Obj<RawResponseElements<'a>>,
    #[serde(borrow)]
    pub additional_event_data: Obj<RawAdditionalEventData<'a>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct RawIdentity<'a> {
    #[serde(rename = "type", borrow)]
    pub kind: Text<'a>,
    #[serde(borrow)]
    pub arn: Text<'a>,
    #[serde(borrow)]
    pub account_id: Text<'a>,
    #[serde(borrow)]
    pub principal_id: Text<'a>,
    #[serde(borrow)]
    pub user_name: Text<'a>,
    #[serde(borrow)]
    pub access_key_id: Text<'a>,
    #[serde(borrow)]
    pub invoked_by: Text<'a>,
    #[serde(borrow)]
    pub session_context: Obj<RawSessionContext<'a>>,
    #[serde(borrow)]
    pub on_behalf_of: Obj<RawOnBehalfOf<'a>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct RawSessionContext<'a> {
    #[serde(borrow)]
    pub session_issuer: Obj<RawSessionIssuer<'a>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct RawSessionIssuer<'a> {
    #[serde(rename = "type", borrow)]
    pub kind: Text<'a>,
    #[serde(borrow)]
    pub arn: Text<'a>,
    #[serde(borrow)]
    pub account_id: Text<'a>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct RawOnBehalfOf<'a> {
    #[serde(borrow)]
    pub user_id: Text<'a>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct RawResponseElements<'a> {
    #[serde(rename = "ConsoleLogin", borrow)]
    pub console_login: Text<'a>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct RawAdditionalEventData<'a> {
    #[serde(rename = "MFAUsed", borrow)]
    pub mfa_used: Text<'a>,
}
