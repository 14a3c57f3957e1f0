# The CA bundle in /etc, as NixOS's security.pki module provides it: a store path whose
# file the stand-in links to the host's bundle at activation (the test fleet appends its
# CA there). It does not build a bundle from certificates of its own.
{ pkgs, ... }:
{
  environment.etc."ssl/certs/ca-certificates.crt".source =
    "${pkgs.cacert}/etc/ssl/certs/ca-bundle.crt";
}
