-- Per-organization SMS price. NULL means the deployment's BILLING_DEFAULT_SMS_PRICE applies.
ALTER TABLE organizations
    ADD COLUMN sms_price numeric(18, 4),
    ADD CONSTRAINT organizations_sms_price_positive CHECK (sms_price > 0 AND sms_price <> 'NaN');
