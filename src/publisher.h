/*-------------------------------------------------------------------------
 *
 * publisher.h
 *	  The cluster's publisher process (immediate mode).
 *
 * IDENTIFICATION
 *	  src/publisher.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef SHE_PUBLISHER_H
#define SHE_PUBLISHER_H

extern void she_publisher_register(void);

#endif							/* SHE_PUBLISHER_H */
