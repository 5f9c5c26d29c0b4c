//! API surfaces: each translates one wire format to engine commands and reads,
//! and never reaches into another surface.

pub mod admin;
pub mod infa;
pub mod licensespring;
pub mod native;
pub mod qlik;
pub mod yext;
