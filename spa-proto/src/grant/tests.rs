//! The one grant grammar.

use super::*;
use proptest::prelude::*;

#[test]
fn one_grant_grammar() {
    let tcp22 = Grant::tcp(22).unwrap();
    let udp53 = Grant::new(Proto::Udp, 53).unwrap();
    for ok in ["22", " tcp/22 ", "TCP/22", "22/tcp"] {
        assert_eq!(ok.parse::<Grant>(), Ok(tcp22), "{ok:?}");
    }
    for ok in ["udp/53", "53/udp", "UDP / 53"] {
        assert_eq!(ok.parse::<Grant>(), Ok(udp53), "{ok:?}");
    }
    assert_eq!(
        "tcp/65535".parse::<Grant>(),
        Grant::new(Proto::Tcp, 65535).map_err(|_| GrantSyntax::Zero)
    );
    for (bad, why) in [
        ("", GrantSyntax::NotANumber),
        ("0", GrantSyntax::Zero),
        ("tcp/0", GrantSyntax::Zero),
        ("65536", GrantSyntax::TooLarge),
        ("99999999999999999999", GrantSyntax::TooLarge),
        ("icmp/1", GrantSyntax::UnknownProto("icmp".into())),
        ("tcp/-1", GrantSyntax::NotANumber),
        ("tcp/22/1", GrantSyntax::NotANumber),
        ("/22", GrantSyntax::UnknownProto(String::new())),
        ("udp/", GrantSyntax::NotANumber),
        ("+22", GrantSyntax::NotANumber),
    ] {
        assert_eq!(bad.parse::<Grant>(), Err(why), "{bad:?}");
    }
}

proptest! {
    #[test]
    fn grant_text_round_trips_and_never_panics(s in ".{0,12}", port in 1u16.., udp: bool) {
        let _ = s.parse::<Grant>();
        let g = Grant::new(if udp { Proto::Udp } else { Proto::Tcp }, port).unwrap();
        prop_assert_eq!(g.to_string().parse::<Grant>(), Ok(g));
    }
}
