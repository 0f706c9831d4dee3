//! Borrowed CloudTrail record shapes holding only the fields trailwatch reads, read off the tape in one pass over
//! each object's keys; unknown fields are skipped.

use crate::parse::lenient::{Json, Obj, Text};

/// One element of `Records`, as written by CloudTrail. Every field may be absent or of an unexpected type.
#[derive(Debug, Default)]
pub struct RawRecord<'a> {
    pub event_time: Text<'a>,
    pub event_source: Text<'a>,
    pub event_name: Text<'a>,
    pub event_type: Text<'a>,
    pub error_code: Text<'a>,
    pub source_ip_address: Text<'a>,
    pub user_agent: Text<'a>,
    pub aws_region: Text<'a>,
    pub recipient_account_id: Text<'a>,
    pub event_id: Text<'a>,
    pub user_identity: Obj<RawIdentity<'a>>,
    pub response_elements: Obj<RawResponseElements<'a>>,
    pub additional_event_data: Obj<RawAdditionalEventData<'a>>,
}

#[derive(Debug, Default)]
pub struct RawIdentity<'a> {
    pub kind: Text<'a>,
    pub arn: Text<'a>,
    pub account_id: Text<'a>,
    pub principal_id: Text<'a>,
    pub user_name: Text<'a>,
    pub access_key_id: Text<'a>,
    pub invoked_by: Text<'a>,
    pub session_context: Obj<RawSessionContext<'a>>,
    pub on_behalf_of: Obj<RawOnBehalfOf<'a>>,
}

#[derive(Debug, Default)]
pub struct RawSessionContext<'a> {
    pub session_issuer: Obj<RawSessionIssuer<'a>>,
}

#[derive(Debug, Default)]
pub struct RawSessionIssuer<'a> {
    pub kind: Text<'a>,
    pub arn: Text<'a>,
    pub account_id: Text<'a>,
}

#[derive(Debug, Default)]
pub struct RawOnBehalfOf<'a> {
    pub user_id: Text<'a>,
}

#[derive(Debug, Default)]
pub struct RawResponseElements<'a> {
    pub console_login: Text<'a>,
}

#[derive(Debug, Default)]
pub struct RawAdditionalEventData<'a> {
    pub mfa_used: Text<'a>,
}

/// Reads an object's fields into `T` with `read_field`; absent unless the value is an object.
fn read_obj<'t, 'de, T: Default>(json: Json<'t, 'de>, read_field: fn(&mut T, &'de str, Json<'t, 'de>)) -> Obj<T> {
    Obj(json.entries().map(|entries| {
        let mut out = T::default();
        for (key, value) in entries {
            read_field(&mut out, key, value);
        }
        out
    }))
}

impl<'a> RawRecord<'a> {
    /// The record's fields, or `None` when the record is not an object.
    pub fn read(json: Json<'_, 'a>) -> Option<RawRecord<'a>> {
        read_obj(json, |r: &mut RawRecord<'a>, key, value| match key {
            "eventTime" => r.event_time = value.text(),
            "eventSource" => r.event_source = value.text(),
            "eventName" => r.event_name = value.text(),
            "eventType" => r.event_type = value.text(),
            "errorCode" => r.error_code = value.text(),
            "sourceIPAddress" => r.source_ip_address = value.text(),
            "userAgent" => r.user_agent = value.text(),
            "awsRegion" => r.aws_region = value.text(),
            "recipientAccountId" => r.recipient_account_id = value.text(),
            "eventID" => r.event_id = value.text(),
            "userIdentity" => r.user_identity = read_obj(value, RawIdentity::read_field),
            "responseElements" => {
                r.response_elements = read_obj(value, |r: &mut RawResponseElements<'a>, key, value| {
                    if key == "ConsoleLogin" {
                        r.console_login = value.text();
                    }
                })
            }
            "additionalEventData" => {
                r.additional_event_data = read_obj(value, |r: &mut RawAdditionalEventData<'a>, key, value| {
                    if key == "MFAUsed" {
                        r.mfa_used = value.text();
                    }
                })
            }
            _ => {}
        })
        .0
    }
}

impl<'a> RawIdentity<'a> {
    /// The identity's fields, or `None` when it is not an object.
    pub fn read(json: Json<'_, 'a>) -> Option<RawIdentity<'a>> {
        read_obj(json, RawIdentity::read_field).0
    }

    fn read_field(&mut self, key: &'a str, value: Json<'_, 'a>) {
        match key {
            "type" => self.kind = value.text(),
            "arn" => self.arn = value.text(),
            "accountId" => self.account_id = value.text(),
            "principalId" => self.principal_id = value.text(),
            "userName" => self.user_name = value.text(),
            "accessKeyId" => self.access_key_id = value.text(),
            "invokedBy" => self.invoked_by = value.text(),
            "sessionContext" => {
                self.session_context = read_obj(value, |c: &mut RawSessionContext<'a>, key, value| {
                    if key == "sessionIssuer" {
                        c.session_issuer = read_obj(value, |i: &mut RawSessionIssuer<'a>, key, value| match key {
                            "type" => i.kind = value.text(),
                            "arn" => i.arn = value.text(),
                            "accountId" => i.account_id = value.text(),
                            _ => {}
                        });
                    }
                })
            }
            "onBehalfOf" => {
                self.on_behalf_of = read_obj(value, |o: &mut RawOnBehalfOf<'a>, key, value| {
                    if key == "userId" {
                        o.user_id = value.text();
                    }
                })
            }
            _ => {}
        }
    }
}
