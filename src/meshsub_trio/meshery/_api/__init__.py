"""The GraphQL API: the schema, its scalars, resolvers and the eight subscriptions' streamers."""
