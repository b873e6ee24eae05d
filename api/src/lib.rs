//! kite-api: the admin API's contract. Each resource has one module with its request and
//! answer types: their serde form is the JSON on the wire, their `ToSchema` the OpenAPI
//! document, and [`request::Request`] their validation (unknown fields refused, every
//! refusal naming its field). The server's handlers read and answer them, the kit's client
//! sends and returns them, the CLI prints tables from them, and the store reads rows into
//! the answer types. Adding a field to a resource means the migration, the store's column
//! list and the one type here.

pub mod common;
pub mod events;
pub mod filters;
pub mod grants;
pub mod invitations;
pub mod keys;
pub mod operational;
pub mod outbox;
pub mod peers;
pub mod policy;
pub mod request;
pub mod senders;
pub mod sources;

pub mod teams;
pub mod tokens;
pub mod types;

/// Every secret accepted: the current one first, then the one a rotation replaced during its
/// overlap.
fn accepted<'a>(current: &'a str, previous: Option<&'a str>) -> Vec<&'a str> {
    let mut v = vec![current];
    v.extend(previous);
    v
}

#[cfg(test)]
mod tests {
    use crate::request::Request;
    use utoipa::openapi::schema::Schema;
    use utoipa::openapi::RefOr;

    /// The property names of `T`'s OpenAPI schema, against the fields its reader takes.
    fn agree<T: Request + utoipa::PartialSchema>() {
        let RefOr::T(Schema::Object(o)) = T::schema() else {
            panic!("{} has no object schema", std::any::type_name::<T>())
        };
        let mut props: Vec<&str> = o.properties.keys().map(String::as_str).collect();
        let mut fields = T::FIELDS.to_vec();
        props.sort_unstable();
        fields.sort_unstable();
        assert_eq!(props, fields, "{}", std::any::type_name::<T>());
    }

    #[test]
    fn every_request_reads_the_fields_its_schema_documents() {
        agree::<crate::peers::NewPeer>();
        agree::<crate::peers::PeerPatch>();
        agree::<crate::peers::ReplayDead>();
        agree::<crate::outbox::ReplayFilter>();
        agree::<crate::senders::NewSender>();
        agree::<crate::senders::SenderPatch>();
        agree::<crate::sources::NewSource>();
        agree::<crate::sources::Rotation>();
        agree::<crate::keys::NewKey>();
        agree::<crate::tokens::NewToken>();
        agree::<crate::teams::NewTeam>();
        agree::<crate::policy::PolicyPatch>();
        agree::<crate::invitations::NewInvitation>();
        agree::<crate::invitations::AcceptInvitation>();
        agree::<crate::grants::NewGrant>();
        agree::<crate::grants::Backfill>();
    }
}
