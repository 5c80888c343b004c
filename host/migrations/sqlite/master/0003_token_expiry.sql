-- A token may be made to expire (`token create --expires-in 90d`): from then
-- on it is refused as a revoked one is. NULL: it does not expire.
ALTER TABLE api_tokens ADD COLUMN expires_at DATETIME NULL;
