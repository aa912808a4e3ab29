/*
 * cams.h -- the request identity shared by every module: one key per
 * (CustSpaceId, PhoneNumber), already validated by route.c.
 */
#ifndef CAMSKEYD_CAMS_H
#define CAMSKEYD_CAMS_H

#include "bounds.h"

#define CAMS_API_VERSION "2020-06-06"
#define CAMS_ACTION "GetPhoneEncryptionPublicKey"

struct cams_key {
	char cust_space_id[LIMIT_CUST_SPACE_ID_MAX + 1]; /* "" when absent */
	char phone[LIMIT_PHONE_MAX_DIGITS + 1];
};

#endif
