// The libssh2 headers bkfleet uses, and the constants that Swift cannot import
// because libssh2 defines them as expressions.
#include <libssh2.h>
#include <libssh2_sftp.h>

static const unsigned int CLIBSSH2_CHANNEL_WINDOW_DEFAULT = LIBSSH2_CHANNEL_WINDOW_DEFAULT;
static const unsigned int CLIBSSH2_CHANNEL_PACKET_DEFAULT = LIBSSH2_CHANNEL_PACKET_DEFAULT;
