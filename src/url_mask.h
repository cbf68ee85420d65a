/*-------------------------------------------------------------------------
 *
 * url_mask.h
 *	  Hide the user information of NATS server URLs before printing them.
 *
 * Plain C, no PostgreSQL headers: test/fuzz builds it without a server.
 *
 * IDENTIFICATION
 *	  src/url_mask.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef SHE_URL_MASK_H
#define SHE_URL_MASK_H

#include <stddef.h>

extern void she_mask_url(const char *url, char *out, size_t outlen);

#endif							/* SHE_URL_MASK_H */
